"""Test support: throwaway databases, the Lambda-context fake, job-run helpers. Never shipped."""
