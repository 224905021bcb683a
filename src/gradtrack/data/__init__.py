"""Data: fetch raw files, prepare the CSVs, validate and load them as numpy arrays."""
