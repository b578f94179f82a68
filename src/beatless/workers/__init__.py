"""The worker's core without Celery: its settings and start-up checks
(`settings`), and ECS task scale-in protection (`protection`). The Celery
glue lives in `worker/`."""
