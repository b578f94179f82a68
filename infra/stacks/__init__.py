"""Stacks only compose constructs; `build` wires them into one app."""

from infra.stacks.app import BeatlessStacks, build

__all__ = ["BeatlessStacks", "build"]
