"""The playground shows the files a run wrote (issue 13, part 3): after a matplotlib run the plot
is an image under the output, and the CSV a download link, in a real headless Chromium against
`livecode serve` with the real sandbox."""

from __future__ import annotations

import os

import pytest

from tests.browser.conftest import Page
from tests.support.client import TERMINAL

pytestmark = [pytest.mark.browser, pytest.mark.slow]

RUN_TIMEOUT = 90  # importing matplotlib and pandas takes a second or two; a busy CI machine more
PLOT = (
    "import matplotlib.pyplot as plt\n"
    "import pandas as pd\n"
    "df = pd.DataFrame({'x': range(10), 'y': [v * v for v in range(10)]})\n"
    "df.plot(x='x', y='y')\n"
    "plt.savefig('out/plot.png')\n"
    "df.to_csv('out/data.csv', index=False)\n"
    "print('plotted')\n"
)


@pytest.mark.skipif(
    not os.path.isdir("/usr/lib/python3/dist-packages/matplotlib"),
    reason="python3-matplotlib is not installed (scripts/setup.sh)",
)
def test_a_matplotlib_plot_shows_under_the_output(page: Page) -> None:
    page.open("/")
    page.wait(lambda: page.run_button().is_enabled(), what="the page to be ready")
    page.replace_code(PLOT)
    page.run_button().click()
    status = page.wait(
        lambda: page.run_status() if page.run_status() in TERMINAL and page.run_button().is_enabled() else None,
        RUN_TIMEOUT,
        what="the run to finish",
    )
    assert status == "COMPLETED", page.state()
    assert "plotted" in page.output()

    # The image is loaded (decoded: a real PNG came through, and the page's CSP let it show).
    loaded = page.wait(
        lambda: page.driver.execute_script(
            "const img = document.querySelector('#run-files img[data-path=\"plot.png\"]');"
            "return img && img.complete && img.naturalWidth > 0 ? [img.naturalWidth, img.src] : null"
        ),
        what="the plot to show",
    )
    width, src = loaded
    assert width >= 100 and src.startswith("blob:")
    assert page.el("#run-files").is_displayed()
    link = page.el('#run-files a[data-path="data.csv"]')
    assert link.text == "data.csv"

    # A new run clears the files of the previous one.
    page.replace_code("print('no files')\n")
    page.run_button().click()
    page.wait(
        lambda: "no files" in page.output() and page.run_button().is_enabled(),
        RUN_TIMEOUT,
        what="the second run to finish",
    )
    assert page.driver.execute_script("return document.querySelectorAll('#run-files img').length") == 0
    assert not page.el("#run-files").is_displayed()
