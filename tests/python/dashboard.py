"""Drives the dashboard in headless Chromium (Selenium + chromedriver) and checks the
rendered page. Called by tests/tests/dashboard.rs with a JSON of what the cluster holds.
Exit 77 when Chromium, chromedriver or Selenium is missing (the Rust test then skips).
"""
import json
import os
import shutil
import sys
import time

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
except ImportError:
    print("selenium is not installed", file=sys.stderr)
    sys.exit(77)

facts = json.loads(sys.argv[1])
shots = facts["screenshots"]
os.makedirs(shots, exist_ok=True)
chromium = shutil.which("chromium") or shutil.which("chromium-browser")
driver_bin = shutil.which("chromedriver")
if not chromium or not driver_bin:
    print("chromium or chromedriver is not installed", file=sys.stderr)
    sys.exit(77)

options = webdriver.ChromeOptions()
options.binary_location = chromium
for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
          "--window-size=1280,800"]:
    options.add_argument(a)
try:
    driver = webdriver.Chrome(service=Service(driver_bin), options=options)
except Exception as e:  # installed but cannot start here (no display libraries, …)
    print(f"chromium cannot start here: {e}", file=sys.stderr)
    sys.exit(77)
base = "http://" + facts["http"]


def wait(what, check, timeout=30):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            got = check()
            if got:
                return got
        except Exception as e:  # the DOM is being replaced under us: look again
            last = e
        time.sleep(0.2)
    driver.save_screenshot(os.path.join(shots, "failure.png"))
    raise AssertionError(f"timed out waiting for {what} (last error: {last})\n{driver.page_source[:4000]}")


def text(css):
    return driver.find_element(By.CSS_SELECTOR, css).text


try:
    # Cluster: the leader and the members.
    driver.get(base + "/#/cluster")
    wait("the leader", lambda: text("#leader") == facts["leader"])
    wait("three members", lambda: len(driver.find_elements(By.CSS_SELECTOR, "#members tbody tr")) == 3)
    wait("the leader marked in the members", lambda: "(leader)" in text(f'#members tr[data-node="{facts["leader"]}"]'))
    wait("the live stream", lambda: text("#live").startswith("live"))
    driver.save_screenshot(os.path.join(shots, "cluster.png"))

    # Jobs: the list and the counts.
    driver.get(base + "/#/jobs")
    for j in facts["jobs"]:
        wait(f"job {j} listed", lambda j=j: driver.find_elements(By.CSS_SELECTOR, f'#jobs tr[data-job="{j}"]'))
    wait("a count of succeeded jobs", lambda: int(text('#counts a[data-state="succeeded"] .count')) >= 1)
    driver.save_screenshot(os.path.join(shots, "jobs.png"))

    # A job that succeeded: its attempt and its output.
    driver.get(base + f'/#/job/{facts["hello"]}')
    wait("the output streamed", lambda: "hello from the dashboard test" in text("#output"))
    wait("one attempt", lambda: len(driver.find_elements(By.CSS_SELECTOR, "#attempts tbody tr")) == 1)
    # Its history: the entries that submitted, assigned, started and finished it.
    wait("the job's history in the log", lambda: [r.find_elements(By.TAG_NAME, "td")[2].text
         for r in driver.find_elements(By.CSS_SELECTOR, "#history tbody tr")]
         == ["job_submitted", "job_assigned", "job_started", "job_finished"])
    wait("terms in the history", lambda: all(int(r.find_elements(By.TAG_NAME, "td")[1].text) >= 1
         for r in driver.find_elements(By.CSS_SELECTOR, "#history tbody tr")))
    driver.save_screenshot(os.path.join(shots, "job.png"))

    # The log: recent entries, checkpoints, snapshots; no divergence.
    driver.get(base + "/#/log")
    wait("log entries", lambda: len(driver.find_elements(By.CSS_SELECTOR, "#log tbody tr")) >= 5)
    kinds = [r.find_elements(By.TAG_NAME, "td")[3].text for r in driver.find_elements(By.CSS_SELECTOR, "#log tbody tr")]
    assert "blank" in kinds or "membership" in kinds or any(k for k in kinds), kinds
    assert text("#divergences") == "0"
    driver.save_screenshot(os.path.join(shots, "log.png"))

    # The workflow: the DAG with each job's state, and a timeline of its attempts.
    driver.get(base + f'/#/job/{facts["hello"]}')
    wait("the workflow link", lambda: driver.find_element(By.ID, "workflow-link")).click()
    states = {facts["hello"]: "succeeded", facts["failing"]: "failed", facts["after"]: "cancelled"}
    for j, st in states.items():
        wait(f"job {j} {st} in the DAG", lambda j=j, st=st: driver.find_element(
            By.CSS_SELECTOR, f'#dag g.dag-node[data-job="{j}"]').get_attribute("data-state") == st)
    wait("two edges", lambda: len(driver.find_elements(By.CSS_SELECTOR, "#dag line.dag-edge")) == 2)
    wait("three attempts on the timeline", lambda: len(driver.find_elements(By.CSS_SELECTOR, "#gantt rect.gantt-bar")) == 3)
    driver.save_screenshot(os.path.join(shots, "workflow.png"))

    # A job that failed, retried once: two attempts, each exit 3.
    driver.get(base + f'/#/job/{facts["failing"]}')
    wait("two failed attempts", lambda: [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#attempts td.outcome")]
         and all(t.startswith("exit 3") for t in [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#attempts td.outcome")])
         and len(driver.find_elements(By.CSS_SELECTOR, "#attempts td.outcome")) == 2)
    wait("state failed", lambda: driver.find_element(By.CSS_SELECTOR, "h2 .state").get_attribute("data-state") == "failed")

    # A job killed at its timeout says why.
    driver.get(base + f'/#/job/{facts["timed"]}')
    wait("the kill reason", lambda: text("#attempts td.why") == "killed: timeout")

    # Live: a job submitted now, open on its page while it runs, turns succeeded there
    # without a reload.
    slow = driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch('/v1/jobs', {method: 'POST', headers: {'content-type': 'application/json'},
            body: JSON.stringify({spec: {name: 'slow', command: ['sleep', '3']}})})
          .then(r => r.json()).then(b => done(b.job_id));
    """)
    driver.get(base + f"/#/job/{slow}")
    driver.execute_script("window.__no_reload = 1")
    wait("the slow job not yet done", lambda: driver.find_element(By.CSS_SELECTOR, "h2 .state").get_attribute("data-state") in ("pending", "assigned", "running"))
    wait("the slow job succeeded, live", lambda: driver.find_element(By.CSS_SELECTOR, "h2 .state").get_attribute("data-state") == "succeeded", timeout=60)
    assert driver.execute_script("return window.__no_reload") == 1, "the page was reloaded"

    # Cancel from the page.
    driver.get(base + f'/#/job/{facts["sleeper"]}')
    wait("the sleeper running", lambda: driver.find_element(By.CSS_SELECTOR, "h2 .state").get_attribute("data-state") == "running")
    driver.find_element(By.ID, "cancel").click()
    wait("the sleeper cancelled", lambda: driver.find_element(By.CSS_SELECTOR, "h2 .state").get_attribute("data-state") == "cancelled")
    driver.save_screenshot(os.path.join(shots, "cancelled.png"))

    # Phone width: the same page still renders its table.
    driver.set_window_size(390, 844)
    driver.get(base + "/#/jobs")
    wait("jobs at phone width", lambda: driver.find_elements(By.CSS_SELECTOR, "#jobs tbody tr"))
    driver.save_screenshot(os.path.join(shots, "jobs-phone.png"))
    print("dashboard checks passed")
finally:
    driver.quit()
