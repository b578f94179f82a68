"""The task API: launch, follow, revoke and retry the heavy operations (`beatless.api.app`)."""
