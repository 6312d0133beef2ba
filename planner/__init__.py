"""llm-sap planning core, pure and without IO of its own: the closed action vocabulary, NHFM
memory, the prompts factory and knowledge base, the structured response and its parser, the
n-gram sequence prior, planning engines behind one contract (``engines/``), the Planner with its
deadline and fallback, the engine worker shared by every room, the plugin registry and the one
config base every package's settings derive from. It imports no other llm-sap package."""
