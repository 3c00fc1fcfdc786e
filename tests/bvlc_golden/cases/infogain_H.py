"""Writes infogain_H.binaryproto (the InfogainLoss cases' matrix) with BVLC's pycaffe:
PYTHONPATH=$BVLC/caffe/python $BVLC/venv/bin/python infogain_H.py"""
import numpy as np
import caffe

H = (np.eye(4) + 0.25 * np.arange(16).reshape(4, 4) / 15).astype(np.float32).reshape(1, 1, 4, 4)
with open("infogain_H.binaryproto", "wb") as f:
    f.write(caffe.io.array_to_blobproto(H).SerializeToString())
