// Review queue: keyboard shortcuts, the reviewer's name remembered, and the
// next review loaded in place after a label (no full page reload).
(() => {
  const KEY = "aegis-reviewer";

  function wire() {
    const reviewer = document.getElementById("reviewer");
    if (reviewer) {
      reviewer.value = reviewer.value || localStorage.getItem(KEY) || "";
      reviewer.addEventListener("change", () => localStorage.setItem(KEY, reviewer.value));
    }
    const claim = document.getElementById("claim-form");
    if (claim) {
      claim.addEventListener("submit", (event) => {
        // A claim is in the reviewer's name: ask for it first.
        if (!reviewer || !reviewer.reportValidity()) {
          event.preventDefault();
          return;
        }
        claim.querySelector(".reviewer-copy").value = reviewer.value;
        localStorage.setItem(KEY, reviewer.value);
      });
    }
    const form = document.getElementById("label-form");
    if (form) form.addEventListener("submit", swapIn);
  }

  async function swapIn(event) {
    // Post the label, then put the next review the server answers with in
    // place. Anything else (an error page, the sign-in form) is shown as a
    // normal page.
    event.preventDefault();
    const form = event.target;
    if (!form.reportValidity() || form.dataset.sending) return;
    form.dataset.sending = "1";
    form.querySelector("button[type=submit]").disabled = true;
    localStorage.setItem(KEY, form.reviewer.value);
    let response;
    try {
      response = await fetch(form.action, { method: "POST", body: new FormData(form), redirect: "follow" });
    } catch {
      form.submit(); // the network failed: let the browser try and show what happens
      return;
    }
    const isQueue = new URL(response.url).pathname === "/console/reviews";
    const html = (response.headers.get("content-type") || "").startsWith("text/html");
    if (!response.ok || !html || !isQueue) {
      location.assign(response.url);
      return;
    }
    const next = new DOMParser().parseFromString(await response.text(), "text/html");
    document.querySelector("main").replaceWith(next.querySelector("main"));
    document.title = next.title;
    history.replaceState(null, "", response.url);
    wire();
    const current = document.querySelector(".queue a[aria-current]");
    if (current) current.focus();
  }

  function move(step) {
    const links = [...document.querySelectorAll(".queue a")];
    const at = links.findIndex((link) => link.hasAttribute("aria-current"));
    const target = links[at + step];
    if (target) target.click();
  }

  document.addEventListener("keydown", (event) => {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    if (event.key === "Enter" && event.target.closest("a, button")) return; // follow the link, press the button
    const typing = event.target.closest("input, textarea, select") && event.target.type !== "radio";
    if (typing) return;
    const actions = {
      j: () => move(1),
      k: () => move(-1),
      p: () => document.getElementById("verdict-pass")?.click(),
      f: () => document.getElementById("verdict-fail")?.click(),
      c: () => document.getElementById("claim-form")?.requestSubmit(),
      Enter: () => document.getElementById("label-form")?.requestSubmit(),
    };
    const action = actions[event.key];
    if (action) {
      event.preventDefault();
      action();
    }
  });

  wire();
})();
