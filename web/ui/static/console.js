// The VM page's serial console: xterm.js on the console WebSocket (binary frames are terminal bytes both ways,
// text frames JSON messages: opened, ended, error).
(function () {
  "use strict";
  const box = document.querySelector("[data-console]");
  if (!box) return;
  const screen = box.querySelector(".console-screen");
  const status = box.querySelector("[data-console-status]");
  const encoder = new TextEncoder();
  let term = null;
  let ws = null;

  function terminal() {
    if (term) return term;
    term = new Terminal({ rows: 24, cols: 100, fontSize: 14, scrollback: 2000 });
    term.open(screen);
    term.onData((data) => {
      if (ws && ws.readyState === WebSocket.OPEN) ws.send(encoder.encode(data));
    });
    return term;
  }

  function connect(force) {
    if (ws) ws.close();
    const url = new URL(box.dataset.console, window.location.href);
    url.protocol = window.location.protocol === "https:" ? "wss:" : "ws:";
    if (force) url.searchParams.set("force", "1");
    const socket = new WebSocket(url);
    socket.binaryType = "arraybuffer";
    ws = socket;
    status.textContent = "Connecting…";
    let ended = false;
    socket.onmessage = (event) => {
      if (typeof event.data !== "string") {
        terminal().write(new Uint8Array(event.data));
        return;
      }
      const message = JSON.parse(event.data);
      if (message.type === "opened") {
        status.textContent = `Connected to host ${message.host}.`;
        terminal().focus();
      } else if (message.type === "ended") {
        ended = true;
        status.textContent = `Session ended: ${message.message}`;
      } else if (message.type === "error") {
        ended = true;
        status.textContent = message.error.message;
      }
    };
    socket.onclose = () => {
      if (!ended && ws === socket) status.textContent = "Disconnected.";
    };
  }

  box.querySelector("[data-console-open]").addEventListener("click", () => connect(false));
  box.querySelector("[data-console-force]").addEventListener("click", () => connect(true));
})();
