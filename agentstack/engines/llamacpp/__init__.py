"""The ``llamacpp`` chat engine: llama.cpp's own server, in this process, from the ``xllamacpp`` wheel.

``engine.py`` (the ChatEngine), ``instance.py`` (one llama.cpp server: a model file plus its LoRA
adapters), ``request.py`` (agentstack requests as llama.cpp completion bodies), ``grammar.py``
(structured outputs as llguidance Lark grammars), ``model_file.py`` (which GGUF, its metadata and
tokenizer), ``lora.py`` (PEFT adapters as GGUF LoRA files), ``quantize.py`` (requantising a GGUF).
"""
