"""Imports every command module so each registers its commands on ``app``."""

from agentstack.cli import serve  # noqa: F401
from agentstack.cli import config_cmd  # noqa: F401
from agentstack.cli import index  # noqa: F401
from agentstack.cli import eval  # noqa: F401
from agentstack.cli import align  # noqa: F401
from agentstack.cli import feedback  # noqa: F401
from agentstack.cli import models  # noqa: F401
from agentstack.cli import db  # noqa: F401
from agentstack.cli import vllm_cmd  # noqa: F401
