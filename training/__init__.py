"""llm-sap offline side: data loading, metrics, evaluation, prior selection, training."""
