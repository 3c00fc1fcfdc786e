// The Turing-test page: one session of the two-alternative forced choice.
// The server is the only source of truth: which trial comes next, which images to show, whether a session
// is finished.  A reload asks it again (POST /api/session) and resumes at the first unanswered trial.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  let state = null;        // {participant, trials, practice, next, done, display_ms, feedback_ms}
  let phase = "idle";      // idle | loading | showing | answering | sending | feedback
  let hiddenAt = 0, shownFor = 0;

  function show(screen) {
    for (const s of document.querySelectorAll(".screen")) s.hidden = (s.id !== screen);
  }
  function error(msg) { const e = $("error"); e.textContent = msg; e.hidden = !msg; }
  function progress() {
    if (!state || state.done) { $("progress").textContent = ""; return; }
    const k = state.next + 1, practice = state.next < state.practice;
    $("progress").textContent = `Trial ${k} of ${state.trials}` + (practice ? " (practice)" : "");
  }
  async function post(url, body) {
    const r = await fetch(url, {method: "POST", headers: {"Content-Type": "application/json"},
                                body: JSON.stringify(body)});
    let data = {};
    try { data = await r.json(); } catch (e) { /* empty */ }
    return {status: r.status, data};
  }
  function loadImage(img, src) {
    return new Promise((resolve, reject) => {
      img.onload = () => resolve(); img.onerror = () => reject(new Error("image failed to load"));
      img.src = src;
    }).then(() => (img.decode ? img.decode().catch(() => {}) : null));
  }
  const frame = () => new Promise((r) => requestAnimationFrame(() => r()));
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  async function startSession(participant) {
    error("");
    const r = await post("/api/session", {participant});
    if (r.status !== 200) { error(r.data.error || `server answered ${r.status}`); show("login"); return; }
    state = r.data;
    localStorage.setItem("turing.participant", participant);
    const url = new URL(location.href); url.searchParams.set("participant", participant);
    history.replaceState(null, "", url);
    progress();
    if (state.done) return finish();
    const left = state.trials - state.next;
    $("intro-counts").textContent = state.next === 0
      ? `${state.practice} practice trials (you will be told whether you were right), then ` +
        `${state.trials - state.practice} trials without feedback.`
      : `Resuming at trial ${state.next + 1}; ${left} trial${left === 1 ? "" : "s"} left.`;
    $("start-button").textContent = state.next === 0 ? "Start" : "Continue";
    show("intro"); phase = "idle"; $("start-button").focus();
  }

  async function runTrial() {
    if (state.done) return finish();
    progress(); show("trial");
    const t = state.next, trial = $("trial");
    trial.className = "screen"; $("prompt").innerHTML = "&nbsp;"; $("feedback").innerHTML = "&nbsp;";
    $("feedback").className = "";
    phase = "loading";
    const base = `/api/image/${encodeURIComponent(state.participant)}/${t}/`;
    try {
      await Promise.all([loadImage($("left-img"), base + "left"), loadImage($("right-img"), base + "right")]);
    } catch (e) { error("Could not load the images; reload the page to continue."); return; }
    trial.classList.add("showing"); phase = "showing";
    await frame(); await frame();            // the images are on screen from here
    const shownAt = performance.now();
    await sleep(state.display_ms);
    trial.classList.remove("showing");
    await frame();
    hiddenAt = performance.now(); shownFor = hiddenAt - shownAt;
    $("left-img").removeAttribute("src"); $("right-img").removeAttribute("src");
    trial.classList.add("answering"); phase = "answering";
    $("prompt").textContent = "Which photo had fake colours? Click it or press \u2190 / \u2192.";
  }

  async function answer(side) {
    if (phase !== "answering") return;
    phase = "sending";
    const responded = performance.now() - hiddenAt;
    $("trial").classList.remove("answering");
    const body = {participant: state.participant, trial: state.next, choice: side,
                  display_ms: Math.round(shownFor * 10) / 10, response_ms: Math.round(responded * 10) / 10};
    let r;
    try { r = await post("/api/answer", body); } catch (e) {
      error("The server did not answer; reload the page to continue."); return;
    }
    if (r.status !== 200) {                  // e.g. answered already in another tab: ask where we are
      return startSession(state.participant);
    }
    state.next = r.data.next; state.done = r.data.done;
    if (r.data.feedback) {
      phase = "feedback";
      const fb = $("feedback");
      fb.textContent = r.data.feedback === "right" ? "Right" : "Wrong"; fb.className = r.data.feedback;
      await sleep(state.feedback_ms);
    }
    runTrial();
  }

  function finish() {
    phase = "idle"; state.done = true; progress();
    localStorage.removeItem("turing.participant");
    show("done");
  }

  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault(); startSession($("participant").value.trim());
  });
  $("start-button").addEventListener("click", () => { if (phase === "idle") runTrial(); });
  for (const side of ["left", "right"]) $(side).addEventListener("click", () => answer(side));
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "ArrowLeft") { ev.preventDefault(); answer("left"); }
    else if (ev.key === "ArrowRight") { ev.preventDefault(); answer("right"); }
  });

  // back/forward may restore this page from the browser's cache: ask the server where the session stands
  window.addEventListener("pageshow", (ev) => { if (ev.persisted) location.reload(); });

  const given = new URL(location.href).searchParams.get("participant") || localStorage.getItem("turing.participant");
  if (given) { $("participant").value = given; startSession(given); } else { show("login"); $("participant").focus(); }
})();
