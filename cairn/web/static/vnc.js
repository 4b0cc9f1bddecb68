// The VM's screen in the page: noVNC (Debian's package, served at /novnc) over the
// appliance's own WebSocket, which relays to QEMU's loopback VNC behind the login.
import RFB from "/novnc/core/rfb.js";

const screen = document.getElementById("vnc");
const status = document.getElementById("vnc-status");
const scheme = location.protocol === "https:" ? "wss://" : "ws://";
const rfb = new RFB(screen, scheme + location.host + screen.dataset.path,
                    { credentials: { password: screen.dataset.password } });
rfb.scaleViewport = true;
rfb.addEventListener("connect", () => { status.textContent = "connected"; });
rfb.addEventListener("disconnect", (e) => {
  status.textContent = e.detail.clean ? "disconnected" : "the connection to the screen was lost";
});
rfb.addEventListener("securityfailure", () => { status.textContent = "the screen refused the password"; });
