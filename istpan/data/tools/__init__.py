"""Dataset tools built on the data path: `istpan data check | shard | prepare | flow | synth` (and their library
functions).

The data path itself (annotation line -> batch) lives one folder up; nothing there imports from here.
"""
