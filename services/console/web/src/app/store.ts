import { combineSlices, configureStore } from "@reduxjs/toolkit"
import { setupListeners } from "@reduxjs/toolkit/query"
import { apiSlice } from "./api"
import { sessionSlice } from "../features/session/sessionSlice"
import { liveSpendSlice } from "../features/overview/liveSpendSlice"
import { toastListener, toastsSlice } from "../features/toasts/toastsSlice"

const rootReducer = combineSlices(apiSlice, sessionSlice, liveSpendSlice, toastsSlice)

export type RootState = ReturnType<typeof rootReducer>

/** A fresh store; tests build real ones with the state they need. */
export const makeStore = (preloadedState?: Partial<RootState>) => {
  const store = configureStore({
    reducer: rootReducer,
    middleware: (getDefaultMiddleware) => getDefaultMiddleware().prepend(toastListener.middleware).concat(apiSlice.middleware),
    preloadedState,
  })
  setupListeners(store.dispatch)
  return store
}

export type AppStore = ReturnType<typeof makeStore>
export type AppDispatch = AppStore["dispatch"]
