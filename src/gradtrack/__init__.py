"""gradtrack: gradient-based training on numpy, PyTorch and TensorFlow, tracked in MLflow.

Importing the package is cheap on purpose: frameworks, mlflow and scikit-learn are
imported only by the modules that use them.
"""

__version__ = "0.1.0"
