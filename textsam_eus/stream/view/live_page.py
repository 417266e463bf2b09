"""The HTML page of ``--serve``: the live overlay (MJPEG), fps, latency p50/p99, drops and a latency sparkline.

A static page: the overlay is an ``<img>`` on ``/video.mjpg`` and the numbers come from ``/stats.json`` every
half second; the state line says whether the run is starting (the model is loading), running or ended (the last
frame stays). No external scripts, fonts or styles (it works without a network).
"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>TextSAM-EUS live</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body { margin: 0; background: #111; color: #ddd; font: 14px system-ui, sans-serif; }
 header { padding: 8px 14px; background: #1b1b1b; display: flex; gap: 22px; align-items: baseline; flex-wrap: wrap; }
 header b { color: #fff; font-size: 16px; }
 .v { color: #fff; font-variant-numeric: tabular-nums; }
 main { padding: 10px 14px; }
 #video { max-width: 100%; background: #000; display: block; }
 #spark { background: #1b1b1b; display: block; margin-top: 8px; }
 #state.ended { color: #f88; }
</style></head>
<body>
<header><b>TextSAM-EUS live</b>
 <span>fps <span class="v" id="fps">-</span></span>
 <span>latency p50 <span class="v" id="p50">-</span> ms</span>
 <span>p99 <span class="v" id="p99">-</span> ms</span>
 <span>frames <span class="v" id="frames">-</span></span>
 <span>dropped <span class="v" id="dropped">-</span></span>
 <span>presence <span class="v" id="presence">-</span></span>
 <span id="state">connecting</span></header>
<main>
 <img id="video" src="/video.mjpg" alt="live overlay">
 <svg id="spark" width="640" height="60" viewBox="0 0 640 60" aria-label="latency of the last frames">
  <polyline id="line" fill="none" stroke="#6cf" stroke-width="1.5" points=""></polyline>
  <text id="scale" x="4" y="12" fill="#888" font-size="11"></text></svg>
</main>
<script>
function num(v, d) { return (v === null || v === undefined) ? "-" : Number(v).toFixed(d); }
async function tick() {
  try {
    const s = await (await fetch("/stats.json", {cache: "no-store"})).json();
    document.getElementById("fps").textContent = num(s.fps, 1);
    document.getElementById("p50").textContent = num(s.latency_ms.p50, 1);
    document.getElementById("p99").textContent = num(s.latency_ms.p99, 1);
    document.getElementById("frames").textContent = s.frames;
    document.getElementById("dropped").textContent = s.frames_dropped;
    document.getElementById("presence").textContent = num(s.presence, 2);
    const st = document.getElementById("state");
    st.textContent = {starting: "starting (the model is loading)", running: "running",
                      ended: "ended: the run's last frame"}[s.state] || s.state;
    st.className = s.state === "ended" ? "ended" : "";
    const v = s.latency_recent || [];
    if (v.length) {
      const top = Math.max(...v, 1), w = 640, h = 60;
      const pts = v.map((y, i) => (i * w / Math.max(1, v.length - 1)).toFixed(1) + "," +
                                  (h - 2 - (h - 16) * y / top).toFixed(1));
      document.getElementById("line").setAttribute("points", pts.join(" "));
      document.getElementById("scale").textContent = "latency, last " + v.length + " frames (max " +
                                                    top.toFixed(0) + " ms)";
    }
  } catch (e) { document.getElementById("state").textContent = "no connection"; }
}
tick(); setInterval(tick, 500);
</script></body></html>
"""
