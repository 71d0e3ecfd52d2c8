"""Orchestrators: plain chat, RAG with validated citations, and ReAct with tools, over any ChatEngine.

They know nothing about HTTP: they take an :class:`~agentstack.orchestrators.events.AgentRequest`
and yield typed events (token, source, step, done).
"""
