"""The alignment loop: feedback → scrubbed preference data → training under a KL constraint →
evaluation gate → hot swap of the served model → rollback. See docs/alignment.md.

Layout (each module says what it knows and what it does not):

* ``spec``          the job spec operators send (method, data window, hyperparameters, thresholds, gate);
* ``preferences``   feedback → pairs / unpaired thumbs, with dedup, caps, minimum counts, held-out split;
* ``constitution``  critique-revision with the served model; offline pairs and SFT rows; inference-time wrapper;
* ``trainers/``     one config dataclass + ``train`` per method (DPO, KTO, reward model, RLOO/GRPO, SFT);
* ``train``         the training process entry point (plain, or under ``accelerate launch``);
* ``launch``        how a training process is started (process | accelerate);
* ``pipeline``      one round in the worker: data, training, registry, gate;
* ``worker``        the job worker process; ``jobs`` the job rows; ``manager`` the server side;
* ``registry``      versioned adapters with metadata and a manifest;
* ``measures``      KL / perplexity drift and held-out pair preference (teacher-forced);
* ``gate``          the promotion decision with its numbers; ``scorers`` reward model and judge;
* ``deploy``        promotion, rollback, restore after restart; ``faults`` test seams.

``import agentstack.alignment`` imports nothing heavy; import the submodule you need.
"""
