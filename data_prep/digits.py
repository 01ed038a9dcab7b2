"""What an MNIST-style store holds, in one place: ten digit classes, and uint8 pixels from 0 to PIXEL_MAX.

data_prep checks stores against these; job reads them (its evaluation, classifier, figures and feature
scaling). May use: nothing.
"""

N_CLASSES = 10  # digits 0-9: labels are uint8 in [0, N_CLASSES)
DEFAULT_CHUNK_SIZE = 8192  # images per stored chunk (8,192 MNIST images: 6.4 MB decoded)
PIXEL_MAX = 255  # uint8 pixels are in [0, PIXEL_MAX]; the job's features are pixels / PIXEL_MAX, in [0, 1]
