"""llm-sap offline side: the CholecT50-SAP loader and split, the paper's metrics, evaluation and
comparison of planners, prior and fusion selection by cross-validation, distillation, LoRA SFT
and GRPO, recognizer training, tiny model builders, the whole configuration tree and the
``llm-sap`` entry point with the offline commands (``commands/``). It may import both other
packages."""
