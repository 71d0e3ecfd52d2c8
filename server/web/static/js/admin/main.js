// The operator console: one section visible at a time, chosen by the URL's hash; each section
// loads its data when shown and stops its polling when hidden.

import { startPage } from "../api.js";
import { $, $$ } from "../dom.js";
import * as audit from "./audit.js";
import * as evals from "./evals.js";
import * as feedback from "./feedback.js";
import * as indexes from "./indexes.js";
import * as jobs from "./jobs.js";
import * as models from "./models.js";
import { showError } from "./ui.js";

const SECTIONS = { feedback, jobs, models, indexes, evals, audit };
let active = null;

async function route() {
  const name = (window.location.hash || "#feedback").slice(1);
  const key = SECTIONS[name] ? name : "feedback";
  if (active && active !== key) SECTIONS[active].hide?.();
  active = key;
  for (const section of $$("[data-section]")) section.hidden = section.id !== key;
  for (const link of $$("nav.sections a")) {
    if (link.getAttribute("href") === `#${key}`) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  document.title = `${$(`#${key} h1`).textContent} · agentstack console`;
  try {
    await SECTIONS[key].show();
  } catch (err) {
    showError(err);
  }
  document.body.dataset.view = key;
}

async function main() {
  if (!(await startPage(showError))) return;
  for (const mod of Object.values(SECTIONS)) mod.init?.();
  window.addEventListener("hashchange", async () => {
    await route();
    $("#content").focus();
  });
  await route();
  document.body.dataset.ready = "true";
}

main();
