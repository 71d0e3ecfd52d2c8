"""garak's CLI with every probe capped at ``run.soft_probe_prompt_cap`` prompts (runs in garak's venv).

garak applies the cap only to probes that opt in (``follow_prompt_cap``); the "full" latent-injection
probes and several web-injection probes do not, and would send hundreds of prompts each. This
wrapper keeps a seeded sample of ``cap`` prompts in every probe before it runs, with every
per-prompt list of the probe (triggers, promptinject's settings) pruned alike, then hands over to
``garak.cli.main``. Used by bench/garak_redteam.py:

    ~/.cache/agentstack/venvs/garak-0.17/bin/python bench/garak_capped.py --config run.json
"""

from __future__ import annotations

import random
import sys


def install_cap() -> None:
    import garak._config as config
    from garak.probes.base import Probe

    original = Probe.probe

    def capped(self, generator):
        cap = config.run.soft_probe_prompt_cap
        n = len(self.prompts)
        if cap and n > cap:
            keep = sorted(random.Random(config.run.seed or 0).sample(range(n), cap))
            for name, value in list(vars(self).items()):
                if isinstance(value, list) and len(value) == n:
                    setattr(self, name, [value[i] for i in keep])
        return original(self, generator)

    Probe.probe = capped


if __name__ == "__main__":
    install_cap()
    from garak import cli

    cli.main(sys.argv[1:])
