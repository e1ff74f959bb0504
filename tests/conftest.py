import pytest


def _have_mnist() -> bool:
    from dgmlab.data.paths import data_dirs

    return any((d / "train-images-idx3-ubyte.gz").exists() for d in data_dirs("mnist"))


@pytest.fixture(scope="session")
def mnist_available():
    if not _have_mnist():
        pytest.fail("MNIST not found: set DGMLAB_DATA to a folder holding mnist/*.gz")
    return True
