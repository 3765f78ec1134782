// The few Node APIs the unit tests use (node:test, node:assert/strict), so that `tsc -p test` checks the tests
// without adding @types/node.

declare module "node:test" {
  export interface TestContext {
    readonly name: string;
  }
  type TestFn = (t: TestContext) => void | Promise<void>;
  export function test(name: string, fn: TestFn): Promise<void>;
}

declare module "node:assert/strict" {
  /** A pattern the error message matches, a validation function, an error class or an object of expected fields. */
  type Expected = RegExp | ((error: any) => boolean) | (new (...args: any[]) => unknown) | object;
  interface Assert {
    (value: unknown, message?: string): asserts value;
    ok(value: unknown, message?: string): asserts value;
    equal<T>(actual: unknown, expected: T, message?: string): asserts actual is T;
    notEqual(actual: unknown, expected: unknown, message?: string): void;
    deepEqual<T>(actual: unknown, expected: T, message?: string): asserts actual is T;
    notDeepEqual(actual: unknown, expected: unknown, message?: string): void;
    throws(fn: () => unknown, expected?: Expected, message?: string): void;
    doesNotThrow(fn: () => unknown, message?: string): void;
    rejects(promise: Promise<unknown> | (() => Promise<unknown>), expected?: Expected, message?: string): Promise<void>;
    match(value: string, pattern: RegExp, message?: string): void;
    fail(message?: string): never;
  }
  const assert: Assert;
  export default assert;
}
