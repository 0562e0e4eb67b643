"""Using a trained model: ReIDModel, the feature store, approximate search, result pages, export."""
