import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.animation import FuncAnimation  # noqa: E402

from dgmlab.plotting import image_grid, markdown_table, offline_jshtml  # noqa: E402


def test_offline_animation_has_no_outside_links():
    fig, ax = plt.subplots()
    (line,) = ax.plot([0, 1], [0, 1])
    anim = FuncAnimation(fig, lambda i: line.set_ydata([0, i]), frames=3)
    html = offline_jshtml(anim)
    plt.close(fig)
    assert "http://" not in html and "https://" not in html
    assert html.count("data:image/png;base64") == 3


def test_image_grid_and_table():
    grid = image_grid(np.zeros((5, 784)), nrow=2)
    assert grid.shape == (2 * 29 + 1, 3 * 29 + 1)
    table = markdown_table([{"model": "adgm", "error": 1.234}])
    assert table.splitlines()[2] == "| adgm | 1.23 |"
