// Entry: connect to the host (Electron IPC or WebSocket), build the studio, render.
import { StrictMode } from "react";
import { createRoot } from "react-dom/client";
import { connect } from "./transport.js";
import { createStudio } from "./state/studio.js";
import { StudioContext } from "./components/hooks.js";
import { App } from "./components/App.js";
import "./styles.css";

/** Next animation frame, or 100 ms when frames are throttled (a hidden tab). */
function nextFrame(fn: () => void): void {
  let done = false;
  const run = () => {
    if (done) return;
    done = true;
    fn();
  };
  requestAnimationFrame(run);
  window.setTimeout(run, 100);
}

const studio = createStudio(connect(), { schedule: nextFrame, sparsityDebounceMs: 120 });

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <StudioContext.Provider value={studio}>
      <App />
    </StudioContext.Provider>
  </StrictMode>,
);
