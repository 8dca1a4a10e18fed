"""Optical flow on the data path: computing it and its 8-bit encoding (`compute`), reading L-stacks from flow
folders or from the video (`frames`), and the transforms that keep flow's sign right (`transforms`); docs/flow.md.
"""
