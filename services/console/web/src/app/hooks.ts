// The only place the untyped react-redux hooks are imported (eslint forbids them elsewhere).
// eslint-disable-next-line no-restricted-imports
import { useDispatch, useSelector } from "react-redux"
import type { AppDispatch, RootState } from "./store"

export const useAppDispatch = useDispatch.withTypes<AppDispatch>()
export const useAppSelector = useSelector.withTypes<RootState>()
