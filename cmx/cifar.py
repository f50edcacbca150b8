"""Facts about CIFAR-10 that several layers need, stated once: image size, split sizes, channel statistics
and the official archive. Pure constants (no torch import), so planning and analysis can use them cheaply.
"""
IMAGE_SIZE = 32  # pixels per side; a patch larger than this leaves nothing to mix
CHANNELS = 3
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
N_CLASSES = len(CLASSES)
TRAIN_SIZE, TEST_SIZE = 50_000, 10_000  # the official split
BYTES_PER_IMAGE = CHANNELS * IMAGE_SIZE * IMAGE_SIZE  # one uint8 image, as a row of a batch file's 'data'
MEAN = (0.4914, 0.4822, 0.4465)  # per-channel, on [0, 1] pixels
STD = (0.2471, 0.2435, 0.2616)

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"
