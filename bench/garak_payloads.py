"""Extract garak's latent-injection payloads as a held-back attack set (runs in garak's venv).

garak's latent-injection probes (``garak.probes.latentinjection``) hide an instruction inside an
otherwise innocuous document and count an attack as successful when the model's output contains
the probe's trigger string. This script composes each probe's injections exactly as the probe
does (separator + instruction with the payload and trigger filled in) and writes them, with their
triggers, to ``bench/data/injection_heldout.json``. The screening rules were not written against
them; the file is committed before any measurement on it, and bench/injection.py plants them in
the BIPIA e-mails as a second attack set. garak is Apache-2.0 (NVIDIA); the file keeps its source.

    ~/.cache/agentstack/venvs/garak-0.17/bin/python bench/garak_payloads.py [--per-probe 12]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

PROBES = ["LatentInjectionFactSnippetEiffel", "LatentInjectionFactSnippetLegal", "LatentInjectionReport",
          "LatentInjectionResume", "LatentInjectionTranslationEnFr", "LatentInjectionTranslationEnZh",
          "LatentWhois", "LatentWhoisSnippet"]


def injections(probe) -> list[tuple[str, str]]:
    from garak.probes.latentinjection import PAYLOAD_MARKER, TRIGGER_MARKER

    out = []
    for start, end in probe.injection_sep_pairs:
        for instruction in probe.injection_instructions:
            for payload in probe.payloads:
                for trigger in probe.payload_triggers:
                    text = start + instruction.replace(PAYLOAD_MARKER, payload.replace(TRIGGER_MARKER, trigger)) + end
                    out.append((text.strip(), trigger))
    return sorted(set(out))


def main() -> None:
    import garak
    import garak._config
    import garak.probes.latentinjection as li

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-probe", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "data" / "injection_heldout.json")
    args = parser.parse_args()
    garak._config.load_base_config()
    rng = random.Random(args.seed)
    attacks = []
    for name in PROBES:
        probe = getattr(li, name)()
        found = injections(probe)
        for text, trigger in rng.sample(found, min(args.per_probe, len(found))):
            attacks.append({"probe": name, "attack": text, "trigger": trigger})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"source": f"garak {garak.__version__} (NVIDIA/garak, Apache-2.0), "
                                              "garak.probes.latentinjection", "seed": args.seed,
                                    "per_probe": args.per_probe, "attacks": attacks}, indent=1, ensure_ascii=False))
    print(f"wrote {len(attacks)} attacks from {len(PROBES)} probes to {args.out}")


if __name__ == "__main__":
    main()
