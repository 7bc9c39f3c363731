// The share dialog: the session's members (add by username as editor or viewer, remove), share
// links with a role and an expiry (create, copy, revoke), and the switch to live co-editing.

import { api, describeError } from "./api.js";

const $ = (id) => document.getElementById(id);

export class ShareDialog {
  /** `onLive()`: the user asked to co-edit live. */
  constructor({ onLive }) {
    this.sessionId = null;
    this.onLive = onLive;
    $("share-close").addEventListener("click", () => $("share-dialog").close());
    $("go-live").addEventListener("click", () => {
      $("share-dialog").close();
      this.onLive();
    });
    $("member-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.addMember();
    });
    $("link-create").addEventListener("click", () => this.createLink());
  }

  async open(sessionId, { live }) {
    this.sessionId = sessionId;
    $("share-error").textContent = "";
    $("link-url").value = "";
    $("go-live").hidden = live;
    $("live-url").value = `${location.origin}/?session=${sessionId}&live=1`;
    $("share-dialog").showModal();
    await Promise.all([this.loadMembers(), this.loadLinks()]);
  }

  error(err) {
    $("share-error").textContent = describeError(err);
  }

  async loadMembers() {
    const list = $("members-list");
    list.textContent = "";
    try {
      const { items } = await api("GET", `/api/v1/code-sessions/${this.sessionId}/members`);
      for (const m of items) {
        const li = document.createElement("li");
        li.textContent = `${m.username} (${m.role})`;
        li.dataset.username = m.username;
        if (m.role !== "owner") {
          const b = document.createElement("button");
          b.type = "button";
          b.textContent = "Remove";
          b.addEventListener("click", () => this.removeMember(m.user_id));
          li.append(" ", b);
        }
        list.append(li);
      }
    } catch (err) {
      // Without accounts there is nobody to share with: say so once.
      if (err.status === 401) $("share-error").textContent = "Sharing needs accounts: sign in first.";
      else this.error(err);
    }
  }

  async addMember() {
    const username = $("member-name").value.trim();
    if (!username) return;
    try {
      await api("POST", `/api/v1/code-sessions/${this.sessionId}/members`, { username, role: $("member-role").value });
      $("member-name").value = "";
      $("share-error").textContent = "";
      await this.loadMembers();
    } catch (err) {
      this.error(err);
    }
  }

  async removeMember(userId) {
    try {
      await api("DELETE", `/api/v1/code-sessions/${this.sessionId}/members/${userId}`);
      await this.loadMembers();
    } catch (err) {
      this.error(err);
    }
  }

  async loadLinks() {
    const list = $("links-list");
    list.textContent = "";
    let items = [];
    try {
      ({ items } = await api("GET", `/api/v1/code-sessions/${this.sessionId}/share-links`));
    } catch {
      return; // only the owner sees the links
    }
    for (const link of items) {
      if (link.revoked) continue;
      const li = document.createElement("li");
      li.textContent = `${link.role}, expires ${new Date(link.expires_at).toLocaleString()}, used ${link.redeemed}× `;
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = "Revoke";
      b.addEventListener("click", () => this.revokeLink(link.link_id));
      li.append(b);
      list.append(li);
    }
  }

  async createLink() {
    try {
      const link = await api("POST", `/api/v1/code-sessions/${this.sessionId}/share-links`, {
        role: $("link-role").value,
        expires_in_s: Number($("link-expiry").value),
      });
      // The token rides in the fragment: it never reaches a server log or a Referer header.
      $("link-url").value = `${location.origin}/?session=${this.sessionId}&live=1#join=${link.token}`;
      $("link-url").select();
      $("share-error").textContent = "";
      await this.loadLinks();
    } catch (err) {
      this.error(err);
    }
  }

  async revokeLink(linkId) {
    try {
      await api("DELETE", `/api/v1/code-sessions/${this.sessionId}/share-links/${linkId}`);
      await this.loadLinks();
    } catch (err) {
      this.error(err);
    }
  }
}

/** A share link's token in the address (`#join=...`), redeemed once: makes the caller a member. */
export async function redeemFromUrl() {
  const match = location.hash.match(/^#join=([A-Za-z0-9_-]+)$/);
  if (!match) return null;
  const joined = await api("POST", "/api/v1/code-sessions/join", { token: match[1] });
  window.history.replaceState(null, "", `${location.pathname}${location.search}`);
  return joined;
}
