"""The Beatless CDK app: `app.py` reads context, `stacks/` compose, `constructs/` build."""
