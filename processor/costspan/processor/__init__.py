"""costspan.processor: OTLP receiver, store, budgets, metrics, usage API and the costspan CLI."""
