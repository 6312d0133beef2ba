"""llm-sap planning core: vocabulary, NHFM memory, prompts, responses, prior, planners."""
