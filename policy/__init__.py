"""The prefect-host policy pack: `rules` holds the rules, `__main__` serves them to the Pulumi engine."""
