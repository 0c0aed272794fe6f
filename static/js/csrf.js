// Requests that change something, made with the session cookie, carry the
// session's CSRF token (templates/base.html puts it in <meta name="csrf-token">).
// A 401 means the session ended: back to the sign-in page, then here again.

export function csrfHeaders() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta && meta.content ? { "x-csrf-token": meta.content } : {};
}

export function signInAgain() {
  const here = window.location.pathname + window.location.search;
  window.location.assign(`/login?next=${encodeURIComponent(here)}`);
}
