// clipcleaner review grid: a Streamlit components-v2 component (no build step). It draws the cards and the detail
// (focus-mode) view from the data the Python side sends (pages/_grid.py), handles the keyboard and the focus in the
// browser, and sends every decision to Python at once, where it is committed to the review store before the page
// shows it as saved. Every string from the data is text: it is only ever set with textContent / setAttribute,
// never parsed as HTML.
//
// Events to Python: one state value, "ui" = {outbox, focus, detail, advance}, set at most once per browser task
// (one rerun of the grid's fragment per key). "outbox" holds every event not yet acknowledged ({seq, type, ...});
// Python processes those with seq > data.acked (exactly once, in order) and returns the new data. "focus" and
// "detail" go into the page URL; "advance" is the auto-advance preference.

const KEYS_HELP = [
  ["J / →", "next card"], ["K / ←", "previous card"], ["↓ / ↑", "card below / above"],
  ["A", "keep the given label"], ["S", "take the suggestion"], ["X", "exclude"], ["E", "none of the classes (excluded with that reason)"],
  ["U", "unsure"],
  ["1 … 9, 0", "relabel to class 1 … 10 (legend above the cards)"], ["R", "relabel: type a class name"],
  ["Z", "undo this tab's last action"], ["Enter / O", "open the detail view of the focused card"],
  ["Esc", "close the detail view, picker or this help"], ["N / P", "next / previous page"], ["?", "this help"],
];
const STATUS = {
  undecided: ["to review", "st-undecided"], accept: ["kept", "st-accept"], relabel: ["relabelled", "st-relabel"],
  exclude: ["excluded", "st-exclude"], unsure: ["unsure", "st-unsure"],
};

function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = String(v);
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const kid of kids.flat()) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.appendChild(typeof kid === "string" ? document.createTextNode(kid) : kid);
  }
  return el;
}
const pct = (p) => (p === null || p === undefined ? "?" : Math.round(p * 100) + "%");
const typing = (t) => t && (t.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName));

function statusOf(st, card) {
  const opt = st.optimistic.get(card.sid);
  return opt ? {status: opt.status, new_label: opt.new_label, pending: true}
             : {status: card.status, new_label: card.new_label, pending: false};
}

function badge(s) {
  const [word, cls] = STATUS[s.status] || [s.status, ""];
  const text = s.status === "relabel" && s.new_label ? "→ " + s.new_label : word;
  return h("span", {class: "ccg-badge " + cls + (s.pending ? " ccg-pending" : ""),
                    title: s.pending ? "saving…" : null}, s.pending ? text + " …" : text);
}

function actionsEl(st, card, s) {
  const act = (a) => (e) => { e.stopPropagation(); setFocus(st, card.sid, false); decide(st, card, a); };
  const on = (cond) => "ccg-btn" + (cond ? " on" : "");
  return h("div", {class: "ccg-actions"},
    h("button", {class: on(s.status === "accept"), "data-act": "accept",
                 title: "Keep the given label (" + card.label + ") — A", onclick: act("accept")}, "✓ Keep"),
    h("button", {class: on(s.status === "relabel" && s.new_label === card.suggested), "data-act": "suggest",
                 disabled: card.suggested === card.label,
                 title: "Take the suggestion: relabel to " + card.suggested + " — S", onclick: act("suggest")},
      "✦ ", h("span", {class: "ccg-ell", text: card.suggested})),
    h("button", {class: on(s.status === "exclude"), "data-act": "exclude",
                 title: "Exclude from the cleaned set — X", onclick: act("exclude")}, "⊘ Exclude"),
    h("button", {class: on(s.status === "unsure"), "data-act": "unsure",
                 title: "Unsure: decide later — U", onclick: act("unsure")}, "? Unsure"),
    h("button", {class: "ccg-btn", "data-act": "none",
                 title: "None of the classes: the image fits no class (excluded with that reason) — E",
                 onclick: act("none")}, "∅ None"),
    h("button", {class: on(s.status === "relabel" && s.new_label !== card.suggested), "data-act": "pick",
                 title: "Relabel to any class — R (or the digit keys)",
                 onclick: (e) => { e.stopPropagation(); setFocus(st, card.sid, false); openPicker(st); }}, "✎ Relabel…"),
    h("button", {class: "ccg-btn", "data-act": "detail", title: "Detail view: large image, top-k of every source, " +
                 "nearest neighbours, history — Enter", onclick: (e) => { e.stopPropagation(); openDetail(st, card.sid); }},
      "⤢ Detail"));
}

function cardEl(st, card) {
  const s = statusOf(st, card);
  const el = h("div", {class: "ccg-card " + (STATUS[s.status] || ["", ""])[1], "data-sid": card.sid,
                       "data-row": card.row, "data-status": s.status, onclick: () => setFocus(st, card.sid)},
    (st.cardEls.get(card.sid) && st.cardEls.get(card.sid).querySelector(":scope > img")) ||
      h("img", {src: card.img, alt: "", loading: "lazy", draggable: "false"}),
    h("div", {class: "ccg-name"}, h("span", {class: "ccg-file", title: card.path, text: card.name}), badge(s)),
    h("div", {class: "ccg-labels"}, "given ", h("b", {text: card.label}), " → ", h("b", {text: card.suggested}),
      " ", h("span", {class: "ccg-prob", text: pct(card.prob)})),
    h("div", {class: "ccg-top", title: "top-3 (" + card.top_source + ")"},
      "top-3 (" + card.top_source + "): " + card.top.map(([l, p]) => l + " " + pct(p)).join(" · ")),
    h("div", {class: "ccg-meta"}, "noise score ", h("b", {text: card.noise === null ? "?" : card.noise.toFixed(2)})),
    h("div", {class: "ccg-reasons", title: card.why.join("; ")},
      card.reasons.length ? card.reasons.map((r) => h("span", {class: "ccg-reason", text: r}))
                          : h("span", {class: "ccg-none", text: "not flagged by any detector"})),
    actionsEl(st, card, s));
  return el;
}

// ---------------------------------------------------------------------------------------------------- events
function sync(st) {
  if (st.syncQueued) return;
  st.syncQueued = true;
  queueMicrotask(() => {
    st.syncQueued = false;
    st.api.setStateValue("ui", {outbox: st.outbox.slice(), focus: st.focus, detail: st.detail, advance: st.advance});
  });
}

function send(st, ev) {
  ev.seq = ++st.seq;
  st.outbox.push(ev);
  sync(st);
}

function cardOf(st, sid) { return st.data.cards.find((c) => c.sid === sid); }

function decide(st, card, action, extra) {
  if (!card) return;
  let label = null;
  let wire = action;
  if (action === "suggest") {
    if (card.suggested === card.label) return;
    wire = "relabel"; label = card.suggested;
  } else if (action === "relabel") {
    label = extra;
  }
  send(st, {type: "decide", sid: card.sid, action: wire, label, seen: card.seen});
  st.optimistic.set(card.sid, {status: wire === "none" ? "exclude" : wire, new_label: label, seq: st.seq});
  showStatus(st, "saving…", "pending");
  if (st.advance) move(st, 1, true);
  schedule(st);
}

function setFocus(st, sid, scroll) {
  if (sid && st.focus !== sid) {
    st.focus = sid;
    if (st.detail) st.detail = sid;
    sync(st);
  }
  schedule(st, scroll !== false);
}

// Draw on the next frame, after the event went to Python (the key handler returns first).
function schedule(st, scroll) {
  st.scrollWanted = st.scrollWanted || !!scroll;
  if (st.rafQueued) return;
  st.rafQueued = true;
  requestAnimationFrame(() => {
    st.rafQueued = false;
    render(st);
    if (st.scrollWanted) { st.scrollWanted = false; scrollToFocus(st); }
  });
}

function move(st, delta, afterDecision) {
  const cards = st.data.cards;
  if (!cards.length) return;
  const i = Math.max(0, cards.findIndex((c) => c.sid === st.focus));
  const j = i + delta;
  if (j >= 0 && j < cards.length) { setFocus(st, cards[j].sid); return; }
  if (j >= cards.length && st.data.page < st.data.pages) goPage(st, st.data.page + 1, "first");
  else if (j < 0 && st.data.page > 1 && !afterDecision) goPage(st, st.data.page - 1, "last");
}

function goPage(st, page, then) {
  if (page < 1 || page > st.data.pages || page === st.data.page) return;
  send(st, {type: "page", page, then: then || "first"});
  st.grid.classList.add("ccg-loading");
}

function openDetail(st, sid) {
  st.detail = sid; st.focus = sid;
  sync(st);
  render(st);
  st.detailBox.scrollIntoView({block: "nearest"});
}

function closeDetail(st) {
  if (!st.detail) return;
  st.detail = null;
  sync(st);
  schedule(st, true);
}

function scrollToFocus(st) {
  const el = st.detail ? st.detailBox : st.grid.querySelector(".ccg-card.ccg-focus");
  if (el) el.scrollIntoView({block: "nearest", inline: "nearest"});
}

function showStatus(st, text, kind) {
  st.status.textContent = text || "";
  st.status.className = "ccg-status" + (kind ? " ccg-" + kind : "");
}

// ---------------------------------------------------------------------------------------------------- picker, help
function openPicker(st) {
  const card = cardOf(st, st.focus);
  if (!card) return;
  st.pickerFor = card.sid;
  st.picker.hidden = false;
  st.pickerTitle.textContent = "Relabel " + card.name + " (given " + card.label + ") to…";
  st.pickerInput.value = "";
  st.pickIndex = 0;
  fillPicker(st);
  st.pickerInput.focus();
}

function closePicker(st) {
  st.picker.hidden = true;
  st.pickerFor = null;
}

function pickerMatches(st) {
  const q = st.pickerInput.value.trim().toLowerCase();
  const all = st.data.classes;
  if (!q) return all;
  const starts = all.filter((c) => c.toLowerCase().startsWith(q));
  return starts.concat(all.filter((c) => !c.toLowerCase().startsWith(q) && c.toLowerCase().includes(q)));
}

function fillPicker(st) {
  const m = pickerMatches(st);
  st.pickIndex = Math.min(st.pickIndex, Math.max(0, m.length - 1));
  st.pickerList.replaceChildren(...m.slice(0, 50).map((c, i) => h("li", {
    class: i === st.pickIndex ? "ccg-sel" : "", role: "option", "aria-selected": i === st.pickIndex ? "true" : null,
    onmousedown: (e) => { e.preventDefault(); choosePick(st, c); }}, c)));
  if (!m.length) st.pickerList.replaceChildren(h("li", {class: "ccg-none", text: "no class matches"}));
}

function choosePick(st, cls) {
  const card = cardOf(st, st.pickerFor);
  closePicker(st);
  if (card && cls) decide(st, card, "relabel", cls);
}

function toggleHelp(st, show) {
  st.help.hidden = show === undefined ? !st.help.hidden : !show;
}

// ---------------------------------------------------------------------------------------------------- keyboard
function onKey(st, e) {
  if (!st.root.isConnected || !st.data.hotkeys || e.ctrlKey || e.metaKey || e.altKey) return;
  const k = e.key;
  if (!st.picker.hidden) {
    if (e.target !== st.pickerInput) return;
    if (k === "Escape") closePicker(st);
    else if (k === "ArrowDown") { st.pickIndex++; fillPicker(st); }
    else if (k === "ArrowUp") { st.pickIndex = Math.max(0, st.pickIndex - 1); fillPicker(st); }
    else if (k === "Enter") choosePick(st, pickerMatches(st)[st.pickIndex]);
    else return;
    e.preventDefault(); e.stopImmediatePropagation();
    return;
  }
  if (typing(e.target)) return;
  if (!st.help.hidden && (k === "Escape" || k === "?")) { toggleHelp(st, false); e.preventDefault(); e.stopImmediatePropagation(); return; }
  const lower = k.toLowerCase();
  if (lower === "escape" && !st.detail) return;  // Streamlit's own Esc (popovers, dialogs) keeps working
  const card = cardOf(st, st.focus);
  const cols = st.data.columns;
  const keymap = {
    j: () => move(st, 1), arrowright: () => move(st, 1), k: () => move(st, -1), arrowleft: () => move(st, -1),
    arrowdown: () => move(st, cols), arrowup: () => move(st, -cols),
    a: () => decide(st, card, "accept"), s: () => decide(st, card, "suggest"), x: () => decide(st, card, "exclude"),
    u: () => decide(st, card, "unsure"), e: () => decide(st, card, "none"), z: () => { send(st, {type: "undo"}); showStatus(st, "undoing…", "pending"); },
    r: () => openPicker(st), enter: () => card && openDetail(st, card.sid), o: () => card && openDetail(st, card.sid),
    escape: () => closeDetail(st), "?": () => toggleHelp(st), n: () => goPage(st, st.data.page + 1, "first"),
    p: () => goPage(st, st.data.page - 1, "first"), pagedown: () => goPage(st, st.data.page + 1, "first"),
    pageup: () => goPage(st, st.data.page - 1, "first"),
  };
  let fn = keymap[lower];
  const digit = "1234567890".indexOf(k);
  if (!fn && digit >= 0 && k.length === 1) {
    const cls = st.data.classes[digit];
    if (cls === undefined) return;
    fn = () => decide(st, card, "relabel", cls);
  }
  if (!fn) return;
  e.preventDefault();
  e.stopImmediatePropagation();  // Streamlit's own keys (R reruns the app) never see ours
  fn();
}

// ---------------------------------------------------------------------------------------------------- drawing
function renderDetail(st) {
  const box = st.detailBox;
  const card = st.detail && cardOf(st, st.detail);
  if (!card) {
    if (!box.hidden) { box.hidden = true; box.replaceChildren(); st.root.classList.remove("ccg-focusmode"); }
    st.detailSig = null;
    return;
  }
  const d = st.data.detail && st.data.detail.sid === card.sid ? st.data.detail : null;
  const s = statusOf(st, card);
  const i = st.data.cards.findIndex((c) => c.sid === card.sid);
  const sig = JSON.stringify([card, s, d, i, st.data.cards.length]);
  if (sig === st.detailSig) return;
  st.detailSig = sig;
  st.root.classList.add("ccg-focusmode");
  box.hidden = false;
  const srcTable = d ? h("table", {class: "ccg-table"},
    h("tr", {}, h("th", {text: "source"}), h("th", {text: "top-1"}), h("th", {text: "top-2"}), h("th", {text: "top-3"})),
    d.sources.map((src) => h("tr", {}, h("td", {text: src.source}),
                                 src.items.map(([l, p]) => h("td", {text: l + " " + pct(p)}))))) : null;
  const hist = d && d.history.length ? h("table", {class: "ccg-table"},
    h("tr", {}, ["when (UTC)", "reviewer", "event", "action", "label", ""].map((t) => h("th", {text: t}))),
    d.history.map((r) => h("tr", {}, h("td", {text: r.at}), h("td", {text: r.reviewer}), h("td", {text: r.kind}),
                           h("td", {text: r.action || "—"}), h("td", {text: r.label || ""}),
                           h("td", {text: r.undone ? "undone" : ""})))) : null;
  const near = d && d.neighbours.length ? h("div", {class: "ccg-near"}, d.neighbours.map((n) =>
    h("figure", {class: "ccg-nb"}, h("img", {src: n.img, alt: "", loading: "lazy"}),
      h("figcaption", {}, h("b", {text: n.label}), " " + (n.mark === "same" ? "✓" : n.mark === "suggested" ? "★" : ""),
        h("br"), "sim " + (n.similarity === null ? "?" : n.similarity.toFixed(2)))))) : null;
  box.replaceChildren(
    h("div", {class: "ccg-dhead"},
      h("button", {class: "ccg-btn", title: "Previous card — K", onclick: () => move(st, -1)}, "‹ Prev"),
      h("span", {class: "ccg-dtitle"}, h("span", {class: "ccg-file", text: card.path}), " ", badge(s),
        h("span", {class: "ccg-dpos", text: " · card " + (i + 1) + " of " + st.data.cards.length + " on this page"})),
      h("button", {class: "ccg-btn", title: "Next card — J", onclick: () => move(st, 1)}, "Next ›"),
      h("button", {class: "ccg-btn", title: "Back to the grid — Esc", onclick: () => closeDetail(st)}, "✕ Close")),
    h("p", {class: "ccg-hint", text: "The keys act on the sample shown here; after a decision the next one is shown."}),
    h("div", {class: "ccg-dbody"},
      h("div", {class: "ccg-dimg"}, h("img", {src: (d && d.img) || card.img, alt: ""})),
      h("div", {class: "ccg-dinfo"},
        h("div", {class: "ccg-labels"}, "given ", h("b", {text: card.label}), " · suggested ",
          h("b", {text: card.suggested}), " " + pct(card.prob) + (d && d.source ? " (" + d.source + ")" : "")),
        h("div", {class: "ccg-meta"}, "noise score " + (card.noise === null ? "?" : card.noise.toFixed(3)) +
          (d && d.knn_agreement !== null ? " · k-NN agreement " + pct(d.knn_agreement) : "")),
        h("div", {class: "ccg-meta"}, "flagged by: " + (card.why.length ? card.why.join("; ") : "none")),
        actionsEl(st, card, s),
        d ? h("div", {}, h("h4", {text: "Top classes per source"}), srcTable) : h("p", {class: "ccg-hint", text: "loading details…"}),
        hist ? h("div", {}, h("h4", {text: "History"}), hist) : null)),
    near ? h("div", {}, h("h4", {text: "Nearest neighbours (cosine similarity) and their given labels"}), near,
             h("p", {class: "ccg-hint", text: "✓ same given label as this sample · ★ carries the suggested label"})) : null);
}

function render(st) {
  const data = st.data;
  const cards = data.cards;
  if (!cardOf(st, st.focus)) st.focus = cards.length ? cards[0].sid : null;
  st.count.textContent = data.total.toLocaleString("en-US") + (data.total === 1 ? " sample" : " samples") +
    (data.pages > 1 ? " · page " + data.page + " of " + data.pages : "");
  st.prev.disabled = data.page <= 1;
  st.next.disabled = data.page >= data.pages;
  st.size.value = String(data.size);
  st.adv.checked = st.advance;
  st.bulkBtn.disabled = !cards.length;
  st.bulkBtn.textContent = "Whole page (" + cards.length + ") ▾";
  const legendSig = JSON.stringify([data.hotkeys, data.classes.slice(0, 11)]);
  if (legendSig !== st.legendSig) {
    st.legendSig = legendSig;
    st.legend.replaceChildren(...(data.hotkeys ? [h("span", {class: "ccg-lk", text: "Keys:"}),
      ...data.classes.slice(0, 10).map((c, i) => h("span", {class: "ccg-hk"}, h("kbd", {text: "1234567890"[i]}), " ", c)),
      data.classes.length > 10 ? h("span", {class: "ccg-hk"}, h("kbd", {text: "R"}), " any class") : null,
      h("span", {class: "ccg-hk"}, h("kbd", {text: "?"}), " all keys")] : []));
  }
  // cards: rebuild only those whose content or state changed; the focus is a class
  const els = cards.map((c) => {
    const s = statusOf(st, c);
    const sig = JSON.stringify([c, s]);
    let el = st.cardEls.get(c.sid);
    if (!el || el.__sig !== sig) { el = cardEl(st, c); el.__sig = sig; }
    el.classList.toggle("ccg-focus", c.sid === st.focus);
    return el;
  });
  st.cardEls = new Map(cards.map((c, i) => [c.sid, els[i]]));
  const kids = st.grid.children;
  if (els.length !== kids.length || els.some((el, i) => kids[i] !== el)) st.grid.replaceChildren(...els);
  st.grid.classList.remove("ccg-loading");
  if (st.grid.style.getPropertyValue("--ccg-cols") !== String(data.columns)) {
    st.grid.style.setProperty("--ccg-cols", String(data.columns));
  }
  const attrs = {"data-focus": st.focus || "", "data-detail": st.detail || "", "data-page": String(data.page),
                 "data-acked": String(data.acked), "data-pending": String(st.outbox.length)};
  for (const [k, v] of Object.entries(attrs)) if (st.root.getAttribute(k) !== v) st.root.setAttribute(k, v);
  renderDetail(st);
  const c = data.conflict;
  const conflictSig = JSON.stringify(c);
  if (conflictSig !== st.conflictSig) {
    st.conflictSig = conflictSig;
    st.conflict.hidden = !c;
    st.conflict.replaceChildren(...(c ? [
      h("b", {text: "Changed by somebody else: "}), c.theirs + ". Your decision (" + c.yours + ") was not applied. ",
      h("button", {class: "ccg-btn", onclick: () => send(st, {type: "resolve", choice: "mine"})}, "Apply mine"),
      " ", h("button", {class: "ccg-btn", onclick: () => send(st, {type: "resolve", choice: "theirs"})}, "Keep theirs")]
      : []));
  }
}

// ---------------------------------------------------------------------------------------------------- mount / update
function build(st) {
  const sizeSel = h("select", {class: "ccg-size", title: "cards per page"},
    [8, 12, 24, 48].map((n) => h("option", {value: n}, n + " per page")));
  sizeSel.addEventListener("change", () => { send(st, {type: "size", size: Number(sizeSel.value)}); });
  const adv = h("input", {type: "checkbox", class: "ccg-adv"});
  adv.addEventListener("change", () => { st.advance = adv.checked; sync(st); });
  st.count = h("span", {class: "ccg-count"});
  st.prev = h("button", {class: "ccg-btn", title: "Previous page — P", onclick: () => goPage(st, st.data.page - 1)}, "‹");
  st.next = h("button", {class: "ccg-btn", title: "Next page — N", onclick: () => goPage(st, st.data.page + 1)}, "›");
  st.size = sizeSel; st.adv = adv;
  const bulk = (action, label) => h("button", {class: "ccg-btn", "data-bulk": action, onclick: () => {
    st.bulk.hidden = true;
    send(st, {type: "bulk", action, seen: Object.fromEntries(st.data.cards.map((c) => [c.sid, c.seen]))});
    showStatus(st, "saving…", "pending");
  }}, label);
  st.bulk = h("div", {class: "ccg-bulk", hidden: true},
    h("span", {class: "ccg-hint", text: "Every card on this page, one undo step (Z):"}),
    bulk("accept", "✓ Keep all given labels"), bulk("suggest", "✦ Take all suggestions"),
    bulk("exclude", "⊘ Exclude all"), bulk("unsure", "? Mark all unsure"), bulk("clear", "↺ Clear decisions"));
  st.bulkBtn = h("button", {class: "ccg-btn", title: "Decide every card on this page at once",
                            onclick: () => { st.bulk.hidden = !st.bulk.hidden; }}, "Whole page ▾");
  st.status = h("span", {class: "ccg-status", role: "status", "aria-live": "polite"});
  st.legend = h("div", {class: "ccg-legend"});
  st.conflict = h("div", {class: "ccg-conflict", role: "alert", hidden: true});
  st.detailBox = h("div", {class: "ccg-detail", hidden: true});
  st.grid = h("div", {class: "ccg-grid"});
  st.empty = h("div", {class: "ccg-empty", hidden: true});
  st.pickerInput = h("input", {type: "text", class: "ccg-pick-input", placeholder: "type a class name, Enter to choose",
                               "aria-label": "class name"});
  st.pickerInput.addEventListener("input", () => { st.pickIndex = 0; fillPicker(st); });
  st.pickerInput.addEventListener("blur", () => setTimeout(() => closePicker(st), 150));
  st.pickerTitle = h("div", {class: "ccg-pick-title"});
  st.pickerList = h("ul", {class: "ccg-pick-list", role: "listbox"});
  st.picker = h("div", {class: "ccg-picker", hidden: true}, st.pickerTitle, st.pickerInput, st.pickerList);
  st.help = h("div", {class: "ccg-help", hidden: true, role: "dialog", "aria-label": "Keyboard shortcuts"},
    h("div", {class: "ccg-help-box"}, h("h4", {text: "Keyboard shortcuts"}),
      h("table", {class: "ccg-table"}, KEYS_HELP.map(([k, w]) => h("tr", {}, h("td", {}, h("kbd", {text: k})), h("td", {text: w})))),
      h("p", {class: "ccg-hint", text: "Keys act on the focused (outlined) card, or on the sample in the detail view. " +
        "Every decision is saved to the review database before it shows as saved. Esc or ? closes this."}),
      h("button", {class: "ccg-btn", onclick: () => toggleHelp(st, false)}, "Close")));
  st.root.replaceChildren(
    h("div", {class: "ccg-bar"}, st.count, st.prev, st.next, sizeSel,
      h("label", {class: "ccg-advl", title: "Move the focus to the next card after a decision"}, adv, " advance"),
      h("button", {class: "ccg-btn", title: "Undo this tab's last action — Z",
                   onclick: () => { send(st, {type: "undo"}); showStatus(st, "undoing…", "pending"); }}, "↶ Undo"),
      st.bulkBtn, h("button", {class: "ccg-btn", title: "Keyboard shortcuts — ?", onclick: () => toggleHelp(st)}, "? Keys"),
      st.status),
    st.bulk,
    st.legend, st.conflict, st.detailBox, st.grid, st.empty, st.picker, st.help);
}

export default function (component) {
  const {data, parentElement} = component;
  let root = parentElement.querySelector(":scope > .ccg");
  let st;
  if (!root) {
    root = h("div", {class: "ccg", tabindex: "-1"});
    parentElement.appendChild(root);
    st = {root, api: component, seq: 0, outbox: [], optimistic: new Map(), cardEls: new Map(), focus: null,
          detail: null, cmdN: -1, msgN: -1, advance: true, pickIndex: 0, data};
    root.__ccg = st;
    build(st);
    st.key = (e) => onKey(st, e);
    window.addEventListener("keydown", st.key, true);
  } else {
    st = root.__ccg;
  }
  st.api = component;
  st.data = data;
  st.seq = Math.max(st.seq, data.acked || 0);
  st.outbox = st.outbox.filter((e) => e.seq > (data.acked || 0));
  for (const [sid, o] of st.optimistic) if (o.seq <= (data.acked || 0)) st.optimistic.delete(sid);
  if (data.advance !== undefined && data.advance !== null && st.cmdN < 0) st.advance = data.advance;
  if (data.cmd && data.cmd.n !== st.cmdN) {
    st.cmdN = data.cmd.n;
    if (data.cmd.focus !== undefined) st.focus = data.cmd.focus;
    if (data.cmd.detail !== undefined) st.detail = data.cmd.detail;
    st.pendingScroll = true;
  }
  if (data.message && data.message.n !== st.msgN) {
    st.msgN = data.message.n;
    showStatus(st, data.message.text, data.message.kind);
  } else if (!st.outbox.length && st.status.classList.contains("ccg-pending")) {
    showStatus(st, "", "");
  }
  render(st);
  if (st.pendingScroll) { st.pendingScroll = false; scrollToFocus(st); }
  return () => { window.removeEventListener("keydown", st.key, true); };
}
