"""Typed stack configuration: `load()` inside a Pulumi program, `load_stack_file()` offline."""

from config.errors import ConfigError, Problem
from config.loader import KEYS, PROJECT, load, load_stack_file, parse, read_stack_file
from config.schema import Cluster, GpuPool, StackConfig, SystemNodeGroup

__all__ = [
    "KEYS", "PROJECT", "Cluster", "ConfigError", "GpuPool", "Problem", "StackConfig", "SystemNodeGroup",
    "load", "load_stack_file", "parse", "read_stack_file",
]
