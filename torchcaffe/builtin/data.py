"""Data layer (LMDB of Caffe Datum records) -- being written."""
