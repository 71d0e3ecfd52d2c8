"""Where the shipped resource folders (``policies/``, ``indexes/``, ``docs/``) live.

From a source checkout they sit at the repository root; from an installed wheel they are inside the
package as ``agentstack/_bundled/<name>`` (see ``[tool.hatch.build.targets.wheel.force-include]`` in
``pyproject.toml``). A settings override (``settings.policies_dir``, ``settings.indexes_dir``) wins
over both. This module only finds folders; it reads nothing and knows no file formats.
"""

from __future__ import annotations

from pathlib import Path

from agentstack.errors import ConfigError

_PACKAGE_DIR = Path(__file__).resolve().parent
_BUNDLED_DIR = _PACKAGE_DIR / "_bundled"
_CHECKOUT_DIR = _PACKAGE_DIR.parent

SHIPPED = ("policies", "indexes", "docs")


def shipped_dir(name: str) -> Path:
    """The shipped copy of the resource folder ``name`` (one of :data:`SHIPPED`).

    The wheel's bundled copy is preferred to a checkout's folder, so an installed package never
    picks up a stray ``policies/`` from the current working tree.
    """
    if name not in SHIPPED:
        raise ValueError(f"unknown resource folder {name!r}; expected one of {SHIPPED}")
    for candidate in (_BUNDLED_DIR / name, _CHECKOUT_DIR / name):
        if candidate.is_dir():
            return candidate
    raise ConfigError(f"the shipped {name}/ folder is missing (looked in {_BUNDLED_DIR / name} and "
                      f"{_CHECKOUT_DIR / name})",
                      fix=f"reinstall agentstack, or point the settings at a {name} folder")


def resource_dir(name: str, override: Path | None = None) -> Path:
    """``override`` if given (it must be a directory), else the shipped folder ``name``."""
    if override is not None:
        override = Path(override).expanduser()
        if not override.is_dir():
            raise ConfigError(f"{name} folder {str(override)!r} does not exist or is not a directory",
                              fix=f"create it, or unset the setting so the shipped {name}/ is used")
        return override
    return shipped_dir(name)


def resource_file(name: str, filename: str, override: Path | None = None) -> Path:
    """The file ``filename`` inside the resource folder ``name`` (see :func:`resource_dir`);
    raises :class:`ConfigError` naming the path when it does not exist."""
    path = resource_dir(name, override) / filename
    if not path.is_file():
        raise ConfigError(f"{path} does not exist",
                          fix=f"add {filename} to {path.parent}, or unset the override to use the shipped one")
    return path
