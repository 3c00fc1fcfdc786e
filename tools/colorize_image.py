#!/usr/bin/env python3
"""Colorize photos with a colorization deploy net (the logic: colorization/colorize.py; also `cic-colorize`).

    python tools/colorize_image.py -img_in photo.jpg -img_out photo_color.png -caffemodel W.caffemodel
    python tools/colorize_image.py -img_in photos/ -img_out colorized/ -caffemodel W.caffemodel

Run `python tools/colorize_image.py -h` for every option.
"""
import sys

from colorization.colorize import main

if __name__ == "__main__":
    sys.exit(main())
