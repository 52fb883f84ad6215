"""Using a trained model: sampling text and scoring it."""
