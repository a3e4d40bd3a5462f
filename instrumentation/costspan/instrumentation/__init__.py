"""costspan.instrumentation: every LLM HTTP call becomes one exact, priced GenAI span."""
