"""What Beatless costs a month in AWS, beside the always-on Celery it replaces (`beatless cost`)."""
