import { signOut } from "./api.js";

document.getElementById("sign-out").addEventListener("click", () => signOut());
