"""One cell, from data to result: data, models, checkpoints, the trainer."""
