import js from "@eslint/js"
import globals from "globals"
import reactHooks from "eslint-plugin-react-hooks"
import tseslint from "typescript-eslint"

export default tseslint.config(
  { ignores: ["dist", "node_modules", "e2e/artifacts"] },
  {
    extends: [js.configs.recommended, ...tseslint.configs.strictTypeChecked],
    files: ["**/*.{ts,tsx}"],
    languageOptions: {
      ecmaVersion: 2022,
      globals: { ...globals.browser, ...globals.node },
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    plugins: { "react-hooks": reactHooks },
    rules: {
      ...reactHooks.configs.recommended.rules,
      "@typescript-eslint/restrict-template-expressions": ["error", { allowNumber: true }],
      "@typescript-eslint/no-confusing-void-expression": "off",
      // RTK Query: `build.query<Result, void>` and destructured lifecycle helpers are the documented style
      "@typescript-eslint/no-invalid-void-type": "off",
      "@typescript-eslint/unbound-method": "off",
      "no-restricted-imports": [
        "error",
        {
          paths: [
            {
              name: "react-redux",
              importNames: ["useSelector", "useDispatch", "useStore"],
              message: "Use the typed hooks useAppSelector / useAppDispatch from src/app/hooks.ts.",
            },
          ],
        },
      ],
      "no-restricted-globals": ["error", { name: "parseFloat", message: "Money is a decimal string: use src/lib/decimal.ts." }],
      "no-restricted-properties": [
        "error",
        { object: "Number", property: "parseFloat", message: "Money is a decimal string: use src/lib/decimal.ts." },
      ],
    },
  },
)
