import { StrictMode } from "react"
import { createRoot } from "react-dom/client"
import { Provider } from "react-redux"
import { BrowserRouter } from "react-router"
import { App } from "./app/App"
import { makeStore } from "./app/store"
import { loadSession } from "./features/session/sessionSlice"
import "./styles.css"

const session = loadSession()
const store = makeStore(session ? { session } : undefined)
const root = document.getElementById("root")
if (!root) throw new Error("index.html has no #root")

createRoot(root).render(
  <StrictMode>
    <Provider store={store}>
      <BrowserRouter>
        <App />
      </BrowserRouter>
    </Provider>
  </StrictMode>,
)
