"""turing_test.py serve in a real headless browser (Debian's chromium + chromium-driver, driven by Selenium):
a whole session of the paper's 10 practice + 40 test trials (display shortened to 50 ms), with mouse clicks,
arrow keys, a page reload and the back button in the middle; then the recorded trials and the report are checked.

Skips, saying why, where Selenium, chromium or chromedriver is missing (``.ci/run`` installs them as root).

``python tests/test_turing_browser.py --screenshot docs/turing_test.png`` takes the README's screenshot.
"""
import json
import shutil
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # for the script use (pytest has it already)

from colorization.turing import Protocol, Study, main  # noqa: E402
from colorization.turing.server import make_server, serve_in_thread  # noqa: E402
from colorization.turing.study import read_jsonl  # noqa: E402

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)
DRIVER = shutil.which("chromedriver")


def browser_missing():
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "Selenium is not installed (pip install selenium)"
    if not CHROMIUM or not DRIVER:
        return "no chromium/chromedriver on PATH (Debian: apt-get install chromium chromium-driver)"
    return None


def chromium(width=720, height=560):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    o = Options()
    o.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              f"--window-size={width},{height}", "--hide-scrollbars"):
        o.add_argument(a)
    return webdriver.Chrome(service=Service(DRIVER), options=o)


@pytest.fixture(scope="module")
def driver():
    why = browser_missing()
    if why:
        pytest.skip(why)
    try:
        d = chromium()
    except Exception as e:  # noqa: BLE001  (a browser that cannot start is a reason to skip, said)
        pytest.skip(f"chromium did not start under chromedriver: {str(e).splitlines()[0]}")
    yield d
    d.quit()


def test_a_whole_session_in_a_real_browser(driver, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    from test_turing_server import synthetic_photos

    study_dir = tmp_path / "study"
    assert main(["prepare", str(study_dir), "--images", str(synthetic_photos(tmp_path / "photos", 50)),
                 "--ground-truth", "--quiet"]) == 0
    server = make_server(Study(study_dir, Protocol(practice=10, test=40, display_ms=50, feedback_ms=400)),
                         "127.0.0.1", 0, quiet=True)
    serve_in_thread(server)
    url = "http://127.0.0.1:%d/" % server.server_address[1]
    wait = WebDriverWait(driver, 20, poll_frequency=0.01)
    try:
        driver.get("data:text/html,<p>before the study</p>")
        driver.get(url)
        box = wait.until(ec.visibility_of_element_located((By.ID, "participant")))
        box.send_keys("browser-01")
        driver.find_element(By.ID, "login-button").click()
        wait.until(ec.element_to_be_clickable((By.ID, "start-button"))).click()
        chosen, progress = [], []
        for t in range(50):
            wait.until(lambda d: "answering" in d.find_element(By.ID, "trial").get_attribute("class"))
            progress.append(driver.find_element(By.ID, "progress").text)
            side = "left" if t % 4 in (0, 3) else "right"
            if t % 2:  # odd trials by keyboard, even ones by mouse
                driver.find_element(By.TAG_NAME, "body").send_keys(Keys.ARROW_LEFT if side == "left"
                                                                   else Keys.ARROW_RIGHT)
            else:
                driver.find_element(By.ID, side).click()
            chosen.append(side)
            if t < 10:  # practice: feedback
                wait.until(lambda d: d.find_element(By.ID, "feedback").text in ("Right", "Wrong"))
            if t == 6:  # a reload in the middle resumes at the next unanswered trial
                wait.until(lambda d: len(read_jsonl(study_dir / "trials.jsonl")) == 7)
                driver.refresh()
                start = wait.until(ec.element_to_be_clickable((By.ID, "start-button")))
                assert "Resuming at trial 8" in driver.find_element(By.ID, "intro-counts").text
                start.click()
            if t == 20:  # back to the previous page and forward again: the same
                wait.until(lambda d: len(read_jsonl(study_dir / "trials.jsonl")) == 21)
                driver.back()
                driver.forward()
                start = wait.until(ec.element_to_be_clickable((By.ID, "start-button")))
                assert "Resuming at trial 22" in driver.find_element(By.ID, "intro-counts").text
                start.click()
        wait.until(ec.visibility_of_element_located((By.ID, "done")))
        assert progress[0] == "Trial 1 of 50 (practice)" and progress[9] == "Trial 10 of 50 (practice)"
        assert progress[10] == "Trial 11 of 50" and progress[49] == "Trial 50 of 50"
        # reloading the finished session's page cannot start it again
        driver.refresh()
        err = wait.until(ec.visibility_of_element_located((By.ID, "error")))
        assert "already completed" in err.text
    finally:
        server.shutdown()
        server.server_close()
    recs = read_jsonl(study_dir / "trials.jsonl")
    assert [r["trial"] for r in recs] == list(range(50))
    assert [r["choice"] for r in recs] == chosen
    assert [r["practice"] for r in recs] == [True] * 10 + [False] * 40
    for r in recs:
        assert 40 <= r["display_ms"] < 1000, r  # measured by the page around the 50 ms display
        assert r["response_ms"] >= 0
    assert main(["report", str(study_dir), "--resamples", "100"]) == 0
    row = json.loads((study_dir / "report" / "report.json").read_text())["algorithms"][0]
    fooled = sum(r["labelled_real"] for r in recs[10:])
    assert (row["participants"], row["test_trials"], row["labelled_real"]) == (1, 40, fooled)


def screenshot(out: Path) -> None:
    """The page in the middle of a trial (gray baseline against the ground truth), for the README."""
    import tempfile

    import cv2
    import numpy as np
    import skimage.data
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    tmp = Path(tempfile.mkdtemp())
    (tmp / "photos").mkdir()
    rng = np.random.default_rng(0)
    for name in ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry"):
        img = getattr(skimage.data, name)()[..., ::-1]
        for k in range(10):  # the paper's 50 trials need 50 photos: crops of five
            h, w = img.shape[:2]
            s = int(min(h, w) * (1 - 0.05 * k))
            y, x = rng.integers(0, h - s + 1), rng.integers(0, w - s + 1)
            cv2.imwrite(str(tmp / "photos" / f"{name}{k}.png"), img[y:y + s, x:x + s])
    assert main(["prepare", str(tmp / "study"), "--images", str(tmp / "photos"), "--gray", "--quiet"]) == 0
    server = make_server(Study(tmp / "study", Protocol(display_ms=600000)), "127.0.0.1", 0,
                         quiet=True)
    serve_in_thread(server)
    d = chromium()
    try:
        d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                          {"width": 640, "height": 440, "deviceScaleFactor": 1, "mobile": False})
        d.get("http://127.0.0.1:%d/?participant=demo" % server.server_address[1])
        wait = WebDriverWait(d, 20)
        wait.until(ec.element_to_be_clickable((By.ID, "start-button"))).click()
        wait.until(lambda x: "showing" in x.find_element(By.ID, "trial").get_attribute("class"))
        time.sleep(0.5)
        import io

        from PIL import Image  # matplotlib's dependency; a 256-colour palette keeps the README's image small

        img = Image.open(io.BytesIO(d.get_screenshot_as_png())).convert("RGB")
        img.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(out, optimize=True)
    finally:
        d.quit()
        server.shutdown()
        shutil.rmtree(tmp)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--screenshot":
        screenshot(Path(sys.argv[2]))
    else:
        print(__doc__)
