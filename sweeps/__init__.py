"""sweeps: Optuna studies of pricer fine-tunes, tracked in MLflow. The only package that knows both."""
