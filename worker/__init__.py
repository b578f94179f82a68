"""The Beatless Celery worker: the app (`worker.app`), its tasks, the ECS task
protection bootstep and the container health check."""
