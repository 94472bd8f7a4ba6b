"""Drives the dashboard in headless Chromium (Selenium + chromedriver) and checks the
rendered page. Called by tests/tests/dashboard.rs with a JSON of what the cluster holds.
Exit 77 when Chromium, chromedriver or Selenium is missing (the Rust test then skips).
"""
import json
import os
import shutil
import sys
import time
import urllib.request

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
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


def rows(css):
    return driver.find_elements(By.CSS_SELECTOR, css)


def rest(path, method="GET"):
    """The REST API itself, to compare the page with the cluster."""
    req = urllib.request.Request(base + path, method=method, data=b"{}" if method == "POST" else None,
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"{}")


def svg_titles(css):
    """The text of the <title> of each element matched (what a hover shows)."""
    return driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map(e => e.querySelector('title')?.textContent || '')", css)


# What the page should call each node: its `name` tag, else its address.
node_views = {n["id"]: n for n in rest("/v1/nodes")["nodes"]}
named = facts["named"]


def node_name(node_id):
    return named["name"] if node_id == named["id"] else node_views[node_id]["address"]


try:
    # Cluster: the leader and the members.
    driver.get(base + "/#/cluster")
    wait("the leader", lambda: text("#leader") == facts["leader"])
    wait("three members", lambda: len(driver.find_elements(By.CSS_SELECTOR, "#members tbody tr")) == 3)
    wait("the leader marked in the members", lambda: "(leader)" in text(f'#members tr[data-node="{facts["leader"]}"]'))
    wait("the live stream", lambda: text("#live").startswith("live"))
    # Nodes by name: the named one by its tag, the others by address; ids still shown,
    # tags in sorted order.
    for node_id in node_views:
        want = node_name(node_id)
        wait(f"node {node_id} shown as {want}", lambda node_id=node_id, want=want:
             text(f'#members tr[data-node="{node_id}"] .node-name') == want
             and text(f'#members tr[data-node="{node_id}"] small.id') == node_id)
    assert named["name"] != node_views[named["id"]]["address"]
    for r in rows("#members tbody tr"):
        keys = [t.get_attribute("data-tag") for t in r.find_elements(By.CSS_SELECTOR, ".tag")]
        assert keys and keys == sorted(keys), keys
    driver.save_screenshot(os.path.join(shots, "cluster.png"))

    # Jobs: the list, newest first, and the counts.
    driver.get(base + "/#/jobs")
    for j in facts["jobs"]:
        wait(f"job {j} listed", lambda j=j: driver.find_elements(By.CSS_SELECTOR, f'#jobs tr[data-job="{j}"]'))
    wait("a count of succeeded jobs", lambda: int(text('#counts a[data-state="succeeded"] .count')) >= 1)
    ids = [int(r.get_attribute("data-job")) for r in rows("#jobs tbody tr[data-job]")]
    assert ids == sorted(ids, reverse=True), f"not newest first: {ids}"
    # The node column: where the latest attempt ran, by name.
    hello_node = rest(f'/v1/jobs/{facts["hello"]}')["attempts"][-1]["node_id"]
    wait("hello's node in the node column", lambda: text(f'#jobs tr[data-job="{facts["hello"]}"] td.node') == node_name(hello_node))
    driver.save_screenshot(os.path.join(shots, "jobs.png"))
    # Search by name prefix: only jobs so named remain.
    driver.find_element(By.ID, "filter-name").send_keys("fail")
    driver.find_element(By.ID, "filter-submit").click()
    wait("the name search", lambda: "name=fail" in driver.current_url
         and rows(f'#jobs tr[data-job="{facts["failing"]}"]')
         and all(r.find_element(By.CSS_SELECTOR, "td.name").text.startswith("fail") for r in rows("#jobs tbody tr[data-job]")))
    # Search by node: the choices are named, and every job listed last ran there.
    driver.get(base + "/#/jobs")
    node_select = wait("the node choices", lambda: Select(driver.find_element(By.ID, "filter-node")))
    labels = [o.text for o in node_select.options]
    assert all(node_name(n) in labels for n in node_views), labels
    node_select.select_by_value(hello_node)
    driver.find_element(By.ID, "filter-submit").click()
    wait("the node search", lambda: f"node={hello_node}" in driver.current_url
         and rows(f'#jobs tr[data-job="{facts["hello"]}"]')
         and all(r.find_element(By.CSS_SELECTOR, "td.node a").get_attribute("data-node-id") == hello_node
                 for r in rows("#jobs tbody tr[data-job]")))
    driver.save_screenshot(os.path.join(shots, "jobs-by-node.png"))

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
    wait("entries in words in the history", lambda: all(r.find_elements(By.TAG_NAME, "td")[3].text
         for r in rows("#history tbody tr")))
    # Why it is where it is, and its attempt in words on a named node.
    wait("the explain summary", lambda: "succeeded" in text("#explain-summary"))
    wait("the attempt in words", lambda: text("#attempts td.outcome").startswith("exited 0"))
    assert text("#attempts tbody tr td:nth-child(2)") == node_name(hello_node)
    assert not rows("#rerun-here"), "a succeeded job is not rerun"
    driver.save_screenshot(os.path.join(shots, "job.png"))

    # The log: recent entries, checkpoints, snapshots; no divergence.
    driver.get(base + "/#/log")
    wait("log entries", lambda: len(driver.find_elements(By.CSS_SELECTOR, "#log tbody tr")) >= 5)
    kinds = [r.find_elements(By.TAG_NAME, "td")[3].text for r in driver.find_elements(By.CSS_SELECTOR, "#log tbody tr")]
    assert "blank" in kinds or "membership" in kinds or any(k for k in kinds), kinds
    assert text("#divergences") == "0"
    driver.save_screenshot(os.path.join(shots, "log.png"))

    # Workflows: listed by name with their state, newest first.
    driver.get(base + "/#/cluster")
    driver.find_element(By.ID, "nav-workflows").click()
    wf_row = f'#workflows tr[data-workflow="{facts["workflow"]}"]'
    wait("the workflow listed by name", lambda: text(f"{wf_row} td.name") == facts["workflow_name"])
    wait("the workflow failed", lambda: driver.find_element(By.CSS_SELECTOR, wf_row).get_attribute("data-state") == "failed"
         and text(f"{wf_row} td.wf-state") == "failed")
    wait("its jobs counted by state", lambda: {e.get_attribute("data-state"): e.get_attribute("data-count")
         for e in rows(f"{wf_row} td.counts-cell .state")} == {"succeeded": "1", "failed": "1", "cancelled": "1"})
    driver.save_screenshot(os.path.join(shots, "workflows.png"))
    driver.find_element(By.CSS_SELECTOR, f"{wf_row} td.name a").click()
    wait("the workflow's name in its heading", lambda: facts["workflow_name"] in text("#workflow-title"))

    # The workflow: the DAG with each job's state, and a timeline of its attempts.
    driver.get(base + f'/#/job/{facts["hello"]}')
    wait("the workflow link", lambda: driver.find_element(By.ID, "workflow-link")).click()
    wait("the workflow's name in its heading (from a job)", lambda: facts["workflow_name"] in text("#workflow-title"))
    states = {facts["hello"]: "succeeded", facts["failing"]: "failed", facts["after"]: "cancelled"}
    for j, st in states.items():
        wait(f"job {j} {st} in the DAG", lambda j=j, st=st: driver.find_element(
            By.CSS_SELECTOR, f'#dag g.dag-node[data-job="{j}"]').get_attribute("data-state") == st)
    wait("two edges", lambda: len(driver.find_elements(By.CSS_SELECTOR, "#dag line.dag-edge")) == 2)
    wait("three attempts on the timeline", lambda: len(driver.find_elements(By.CSS_SELECTOR, "#gantt rect.gantt-bar")) == 3)
    # The time axis: ticks labelled in seconds since the first attempt.
    wait("a time axis", lambda: len([t for t in rows("#gantt .gantt-axis .gantt-tick text") if t.text.endswith(" s")]) >= 2)
    # Each bar's hover says in words where the attempt ran and what became of it.
    failing_titles = svg_titles(f'#gantt rect.gantt-bar[data-job="{facts["failing"]}"]')
    assert len(failing_titles) == 2 and all("exited with status 3" in t for t in failing_titles), failing_titles
    for bar in rows("#gantt rect.gantt-bar"):
        title = svg_titles(f'#gantt rect.gantt-bar[data-job="{bar.get_attribute("data-job")}"][data-attempt="{bar.get_attribute("data-attempt")}"]')[0]
        assert node_name(bar.get_attribute("data-node-id")) in title, title
    # A rerun can start from the failed job.
    wait("the rerun choice", lambda: facts["failing"] in [o.get_attribute("value") for o in rows("#rerun-from option")])
    assert driver.find_element(By.ID, "rerun-result").get_attribute("role") == "status"
    driver.save_screenshot(os.path.join(shots, "workflow.png"))

    # A job that failed, retried once: two attempts, each exit 3, in words.
    driver.get(base + f'/#/job/{facts["failing"]}')
    wait("two failed attempts", lambda: [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#attempts td.outcome")]
         and all(t.startswith("exited with status 3") for t in [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#attempts td.outcome")])
         and len(driver.find_elements(By.CSS_SELECTOR, "#attempts td.outcome")) == facts["failing_attempts"] == 2)
    wait("state failed", lambda: driver.find_element(By.CSS_SELECTOR, "h2 .state").get_attribute("data-state") == "failed")
    wait("why it failed", lambda: text("#explain-summary").startswith("failed"))
    wait("the rerun button", lambda: driver.find_element(By.ID, "rerun-here").is_enabled())
    driver.save_screenshot(os.path.join(shots, "job-failed.png"))

    # A job killed at its timeout says why.
    driver.get(base + f'/#/job/{facts["timed"]}')
    wait("the kill reason", lambda: text("#attempts td.why") == "killed: timeout")

    # Crons: listed with schedule, zone and next fire; Pause then Resume flip its state.
    driver.find_element(By.ID, "nav-crons").click()
    cron_row = f'#crons tr[data-cron="{facts["cron"]}"][data-namespace="default"]'
    wait("the cron listed", lambda: text(f"{cron_row} td.schedule") == "0 3 * * *" and text(f"{cron_row} td.tz") == "UTC")
    wait("its next fire", lambda: text(f"{cron_row} td.next").startswith("in "))
    wait("the cron active", lambda: driver.find_element(By.CSS_SELECTOR, cron_row).get_attribute("data-paused") == "false")
    driver.save_screenshot(os.path.join(shots, "crons.png"))
    driver.find_element(By.CSS_SELECTOR, f'{cron_row} button.cron-toggle[data-action="pause"]').click()
    wait("the cron paused on the page", lambda: driver.find_element(By.CSS_SELECTOR, cron_row).get_attribute("data-paused") == "true"
         and text(f"{cron_row} td.paused") == "paused")
    wait("the cron paused in the cluster", lambda: rest(f'/v1/crons/{facts["cron"]}').get("paused") is True)
    wait("the pause said", lambda: "paused" in text("#cron-result"))
    driver.save_screenshot(os.path.join(shots, "crons-paused.png"))
    driver.find_element(By.CSS_SELECTOR, f'{cron_row} button.cron-toggle[data-action="resume"]').click()
    wait("the cron resumed on the page", lambda: driver.find_element(By.CSS_SELECTOR, cron_row).get_attribute("data-paused") == "false")
    wait("the cron resumed in the cluster", lambda: not rest(f'/v1/crons/{facts["cron"]}').get("paused"))

    # Charts of the last hour: each with a title and an accessible label, lines once the
    # node has sampled (1 s after it starts) or else the empty state.
    driver.find_element(By.ID, "nav-charts").click()
    wait("the charts", lambda: len(rows("#charts figure.chart")) >= 5)
    for key in ["jobs", "queue", "queue-wait", "committed", "fsync"]:
        wait(f"chart {key}", lambda key=key: rows(f'#charts figure.chart[data-chart="{key}"] figcaption'))

    def charts_drawn():
        figures = rows("figure.chart")
        for f in figures:
            assert f.find_element(By.TAG_NAME, "figcaption").text
            drawn = f.find_elements(By.CSS_SELECTOR, "svg[role=img][aria-label] polyline.chart-line")
            empty = f.find_elements(By.CSS_SELECTOR, ".chart-empty")
            if not drawn and not empty:
                return False
        return figures
    wait("every chart drawn or empty", charts_drawn)
    # The server samples a second after it starts: by now there are lines, with axis values.
    wait("lines on the jobs chart", lambda: rows('#chart-jobs svg polyline.chart-line')
         and len(rows('#chart-jobs .y-axis text')) >= 2 and rows('#chart-jobs .x-axis text')
         and "Jobs started and finished" in rows('#chart-jobs svg')[0].get_attribute("aria-label"), timeout=40)
    wait("a running chart per node", lambda: len(rows("#node-charts figure.chart")) >= 1)
    driver.save_screenshot(os.path.join(shots, "charts.png"))

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
    wait("the cancelled attempt not in flight", lambda: text("#attempts td.outcome")
         and not any(w in text("#attempts td.outcome") for w in ["running", "in flight"]))
    driver.save_screenshot(os.path.join(shots, "cancelled.png"))

    # Rerun from the failing job's page: the page says so, and the job runs again (it
    # exits 3 again, so its attempts grow; dashboard.rs checks the cluster too).
    driver.get(base + f'/#/job/{facts["failing"]}')
    wait("the rerun button", lambda: driver.find_element(By.ID, "rerun-here")).click()
    wait("the rerun said", lambda: text("#rerun-result").startswith("rerunning jobs")
         and facts["failing"] in text("#rerun-result"))
    wait("more attempts on the page", lambda: len(rows("#attempts tbody tr[data-attempt]")) > facts["failing_attempts"], timeout=60)
    driver.save_screenshot(os.path.join(shots, "rerun.png"))

    # Namespaces: the selector lists them; across all, a job of another namespace is
    # marked with it; choosing one narrows the jobs and the crons to it.
    driver.get(base + "/#/jobs")
    wait("ml in the selector", lambda: "ml" in [o.get_attribute("value") for o in rows("#namespace option")])
    wait("ml's job listed across namespaces, marked",
         lambda: text(f'#jobs tr[data-job="{facts["ml_job"]}"] small.ns') == "ml")
    Select(driver.find_element(By.ID, "namespace")).select_by_value("ml")
    wait("only ml's job", lambda: [r.get_attribute("data-job") for r in rows("#jobs tbody tr[data-job]")] == [facts["ml_job"]])
    driver.find_element(By.ID, "nav-crons").click()
    wait("only ml's cron", lambda: [(r.get_attribute("data-cron"), r.get_attribute("data-namespace"))
                                    for r in rows("#crons tbody tr[data-cron]")] == [("nightly", "ml")])
    driver.save_screenshot(os.path.join(shots, "namespace.png"))
    Select(driver.find_element(By.ID, "namespace")).select_by_value("*")
    wait("both crons again", lambda: len(rows("#crons tbody tr[data-cron]")) == 2)

    # Phone width: the same page still renders its table.
    driver.set_window_size(390, 844)
    driver.get(base + "/#/jobs")
    wait("jobs at phone width", lambda: driver.find_elements(By.CSS_SELECTOR, "#jobs tbody tr"))
    driver.save_screenshot(os.path.join(shots, "jobs-phone.png"))
    print("dashboard checks passed")
finally:
    driver.quit()
